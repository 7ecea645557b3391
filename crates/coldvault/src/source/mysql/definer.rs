//! The `DEFINER=user@host` clause of a view, trigger, routine or event as `SHOW CREATE` prints it.
//!
//! The clause is looked for only in the head of the statement, between `CREATE` and the object's
//! own keyword (`ALGORITHM=…` may come first for a view), never in its body: a string in a body
//! that says `DEFINER=` is text, not a clause. The user and host are read as the server quotes them
//! (backticks, or double quotes under `ANSI_QUOTES`), or bare.

use std::ops::Range;

/// Where `DEFINER=… ` (with the space after it) is in `create`, if it has one.
fn span(create: &str) -> Option<Range<usize>> {
    let mut at = "CREATE ".len();
    if !create.get(..at)?.eq_ignore_ascii_case("CREATE ") {
        return None;
    }
    loop {
        let rest = &create[at..];
        let word_end = rest.find(' ')?;
        let word = &rest[..word_end];
        if word.len() > 8 && word.get(..8)?.eq_ignore_ascii_case("DEFINER=") {
            let end = at + 8 + account_len(&rest[8..])?;
            return (create.as_bytes().get(end) == Some(&b' ')).then_some(at..end + 1);
        }
        let skippable = ["OR", "REPLACE"]
            .iter()
            .any(|w| word.eq_ignore_ascii_case(w))
            || word.to_ascii_uppercase().starts_with("ALGORITHM=");
        if !skippable {
            return None;
        }
        at += word_end + 1;
    }
}

/// The length of `user@host` (or a bare `user`, a role) at the start of `s`.
fn account_len(s: &str) -> Option<usize> {
    let user = name_len(s)?;
    if s.as_bytes().get(user) == Some(&b'@') {
        Some(user + 1 + name_len(&s[user + 1..])?)
    } else {
        Some(user)
    }
}

/// The length of one quoted (a doubled quote inside stays inside) or bare name at `s`'s start.
fn name_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let q = *b.first()?;
    match q {
        b'`' | b'"' | b'\'' => {
            let mut i = 1;
            loop {
                match *b.get(i)? {
                    c if c == q && b.get(i + 1) == Some(&q) => i += 2,
                    c if c == q => return Some(i + 1),
                    b'\\' if q == b'\'' => i += 2,
                    _ => i += 1,
                }
            }
        }
        _ => {
            let n = b
                .iter()
                .take_while(|c| !matches!(c, b'@' | b' ' | b'\n' | b'\t'))
                .count();
            (n > 0).then_some(n)
        }
    }
}

/// The definer as written (`` `app`@`%` ``), if `create` names one.
pub(crate) fn definer(create: &str) -> Option<&str> {
    span(create).map(|r| &create[r.start + 8..r.end - 1])
}

/// `create` without its `DEFINER` clause: the object then belongs to whoever creates it.
pub(crate) fn without_definer(create: &str) -> String {
    match span(create) {
        Some(r) => format!("{}{}", &create[..r.start], &create[r.end..]),
        None => create.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definer_of_each_kind_of_object_is_found_and_left_out() {
        let cases = [
            (
                "CREATE ALGORITHM=UNDEFINED DEFINER=`root`@`localhost` SQL SECURITY DEFINER VIEW `v` AS select 1",
                "`root`@`localhost`",
                "CREATE ALGORITHM=UNDEFINED SQL SECURITY DEFINER VIEW `v` AS select 1",
            ),
            (
                "CREATE DEFINER=`a``b`@`%` PROCEDURE `p`()\nBEGIN SELECT 'DEFINER=x'; END",
                "`a``b`@`%`",
                "CREATE PROCEDURE `p`()\nBEGIN SELECT 'DEFINER=x'; END",
            ),
            (
                "CREATE DEFINER=\"root\"@\"127.0.0.1\" PACKAGE BODY \"pk\" AS END",
                "\"root\"@\"127.0.0.1\"",
                "CREATE PACKAGE BODY \"pk\" AS END",
            ),
            (
                "CREATE DEFINER=`app role` TRIGGER t BEFORE INSERT ON x FOR EACH ROW SET @a = 1",
                "`app role`",
                "CREATE TRIGGER t BEFORE INSERT ON x FOR EACH ROW SET @a = 1",
            ),
            (
                "CREATE DEFINER=root@localhost EVENT `e` ON SCHEDULE EVERY 1 DAY DO SELECT 1",
                "root@localhost",
                "CREATE EVENT `e` ON SCHEDULE EVERY 1 DAY DO SELECT 1",
            ),
        ];
        for (create, who, without) in cases {
            assert_eq!(definer(create), Some(who), "{create}");
            assert_eq!(without_definer(create), without, "{create}");
        }
    }

    #[test]
    fn a_definer_in_a_body_is_text_and_stays() {
        for create in [
            "CREATE VIEW `v` AS select 'DEFINER=`x`@`y` ' AS `d`",
            "CREATE FUNCTION `f`() RETURNS int RETURN 1 -- DEFINER=`x`@`y` ",
            "CREATE DEFINER=`unterminated",
            "SELECT 1",
            "",
        ] {
            assert_eq!(definer(create), None, "{create}");
            assert_eq!(without_definer(create), create);
        }
    }
}
