/// Quotes `value` as one POSIX shell word.
///
/// Everything goes inside single quotes, where the shell interprets nothing; an
/// embedded single quote becomes `'\''`. Newlines survive as literal newlines.
/// Words made only of characters the shell never interprets are left bare so
/// commands stay readable in logs.
pub fn shell_quote(value: &str) -> String {
    let is_plain = !value.is_empty()
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b':' | b'=' | b'@' | b'+' | b',')
        });
    if is_plain {
        return value.to_owned();
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_what_the_shell_would_interpret() {
        let cases = [
            ("", "''"),
            ("plain", "plain"),
            ("/etc/config-manager/config.env", "/etc/config-manager/config.env"),
            ("a b", "'a b'"),
            ("$(rm -rf /)", "'$(rm -rf /)'"),
            ("`id`", "'`id`'"),
            ("it's", "'it'\\''s'"),
            ("'", "''\\'''"),
            ("line\nbreak", "'line\nbreak'"),
            ("*", "'*'"),
            ("~root", "'~root'"),
            ("a;b|c&d", "'a;b|c&d'"),
            ("\"dq\"", "'\"dq\"'"),
        ];
        for (input, expected) in cases {
            assert_eq!(shell_quote(input), expected, "{input:?}");
        }
    }

    #[test]
    fn the_shell_reads_back_the_original() {
        let hostile = [
            "$(rm -rf /)",
            "it's \"quoted\"",
            "multi\nline\n",
            "back\\slash",
            "tab\there",
            "-n",
            "'; echo pwned; '",
            "ünïcödé",
        ];
        for value in hostile {
            let output = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' {}", shell_quote(value)))
                .output()
                .expect("run sh");
            assert_eq!(String::from_utf8_lossy(&output.stdout), value);
        }
    }
}
