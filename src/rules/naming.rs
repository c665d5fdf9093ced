//! Package names from a rule's template: `{rule}`, `{date}`, `{time}`, `{folder}`, `{file}`,
//! `{count}` (the config checks that no other placeholder is used).

use chrono::{DateTime, Local};

pub struct NameParts<'a> {
    pub rule: &'a str,
    pub folder: &'a str,
    pub file: &'a str,
    pub count: usize,
    pub at: DateTime<Local>,
}

pub fn package_name(template: &str, parts: &NameParts<'_>) -> String {
    let name = template
        .replace("{rule}", parts.rule)
        .replace("{date}", &parts.at.format("%Y-%m-%d").to_string())
        .replace("{time}", &parts.at.format("%H-%M-%S").to_string())
        .replace("{folder}", parts.folder)
        .replace("{file}", parts.file)
        .replace("{count}", &parts.count.to_string());
    let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
    if name.is_empty() {
        parts.rule.to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn placeholders_are_filled_and_spaces_tidied() {
        let at = Local.with_ymd_and_hms(2026, 11, 22, 9, 5, 7).unwrap();
        let parts = NameParts {
            rule: "outbox",
            folder: "Show A",
            file: "a.mov",
            count: 3,
            at,
        };
        assert_eq!(
            package_name("{rule} {date} {time}", &parts),
            "outbox 2026-11-22 09-05-07"
        );
        assert_eq!(
            package_name("{folder}: {count} files", &parts),
            "Show A: 3 files"
        );
        assert_eq!(package_name("{file} ", &parts), "a.mov");
        let empty = NameParts {
            folder: "",
            ..parts
        };
        assert_eq!(package_name("{folder}", &empty), "outbox");
    }
}
