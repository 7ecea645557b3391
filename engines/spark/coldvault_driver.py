"""The PySpark driver of coldvault's Spark engine.

spark-submit runs it with: REQUESTS REPLIES BINARY ENV_NAMES
  REQUESTS   a file of JSON lines, one work request (a map task) per line
  REPLIES    where to write one JSON line per request: {"index": i, "reply": ...}
  BINARY     the coldvault binary: an absolute path present on every executor, or the name of a
             file shipped with `spark-submit --files`
  ENV_NAMES  comma-separated names of environment variables to pass to the workers (credentials)

Each request becomes one Spark task (one partition), so Spark schedules and retries each on its
own. An executor pipes the request to `coldvault worker` and returns the worker's one-line reply.
A worker that exits non-zero fails the Spark task, which Spark retries (spark.task.maxFailures);
a task whose storage failed for good is a reply with an error, not a crash, and is not retried.
"""
import json
import os
import subprocess
import sys

from pyspark import SparkContext, SparkFiles


def main():
    requests_path, replies_path, binary, env_names = sys.argv[1:5]
    with open(requests_path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    env = {k: os.environ[k] for k in env_names.split(",") if k and k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")

    def run(partition):
        exe = binary if os.path.isabs(binary) else SparkFiles.get(binary)
        if not os.access(exe, os.X_OK):
            os.chmod(exe, 0o755)
        for index, line in partition:
            p = subprocess.run(
                [exe, "worker"],
                input=(line + "\n").encode(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                check=False,
            )
            if p.returncode != 0:
                raise RuntimeError(
                    "coldvault worker exited with %d: %s"
                    % (p.returncode, p.stderr.decode(errors="replace")[-4000:])
                )
            reply = p.stdout.decode().strip().splitlines()[-1]
            yield json.dumps({"index": index, "reply": json.loads(reply)})

    sc = SparkContext(appName="coldvault")
    try:
        indexed = list(enumerate(lines))
        results = sc.parallelize(indexed, max(1, len(indexed))).mapPartitions(run).collect()
    finally:
        sc.stop()
    with open(replies_path, "w", encoding="utf-8") as f:
        for r in results:
            f.write(r + "\n")


if __name__ == "__main__":
    main()
