//! The JSON Schema `pattern`s of the OpenAPI document for the values the
//! server parses by hand: UUIDs, RFC 3339 instants and the export cursor
//! (the `Idempotency-Key` header's and the export `metadata` filter's are
//! literals in their routes' annotations; the tests here check those too).
//!
//! `format: uuid` and `format: date-time` are annotations in JSON Schema
//! 2020-12: a validator (or a fuzzer such as schemathesis) counts any string
//! as valid for them. These patterns make the document say exactly which
//! strings the parsers take — [`uuid::Uuid`]'s `parse_str` (hyphenated,
//! simple, braced and URN forms, any case) and chrono's
//! `DateTime::parse_from_rfc3339` (real calendar dates, leap seconds, `T`,
//! `t` or a space between date and time, any number of fractional digits,
//! offsets up to ±23:59, `Z`/`z`). Query values are trimmed (Rust's
//! `str::trim`) before they are parsed, so their patterns allow the same
//! whitespace around the value.
//!
//! Every pattern is written in the subset ECMA-262, Python's `re` and the
//! `regex` crate read alike: no `\d`, `\s` or `\w`, whose meanings differ
//! between them (`[\s\S]`, any character, means the same everywhere); the
//! unit tests check each against its parser.

/// One hex digit.
const HEX: &str = "[0-9A-Fa-f]";

/// The characters `str::trim` removes: Unicode `White_Space`.
const TRIMMED: &str = r"[\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";

/// A UUID as `uuid::Uuid::parse_str` reads it, unanchored.
fn uuid_body() -> String {
    let hyphenated = format!("{HEX}{{8}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{12}}");
    format!(r"(?:{HEX}{{32}}|{hyphenated}|\{{{hyphenated}\}}|[Uu][Rr][Nn]:[Uu][Uu][Ii][Dd]:{hyphenated})")
}

/// An instant as `chrono::DateTime::parse_from_rfc3339` reads it, unanchored.
fn rfc3339_body() -> String {
    let year = "[0-9]{4}";
    // Years divisible by 4 and not by 100, or by 400.
    let leap_year = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)";
    let date = format!(
        "(?:{year}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)\
|02-(?:0[1-9]|1[0-9]|2[0-8]))|{leap_year}-02-29)"
    );
    // A second of 60 is a leap second, accepted in any minute.
    let time = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:\.[0-9]+)?";
    let offset = r"(?:[Zz]|[+\u002d\u2212](?:[01][0-9]|2[0-3]):[0-5][0-9])";
    format!(r"{date}[Tt\u0020]{time}{offset}")
}

/// A UUID in a path segment or a JSON body (not trimmed).
pub fn uuid() -> String {
    format!("^{}$", uuid_body())
}

/// A UUID query parameter (trimmed before it is parsed).
pub fn uuid_query() -> String {
    format!("^{TRIMMED}*{}{TRIMMED}*$", uuid_body())
}

/// An RFC 3339 query parameter (trimmed before it is parsed).
pub fn rfc3339_query() -> String {
    format!("^{TRIMMED}*{}{TRIMMED}*$", rfc3339_body())
}

/// The export's `after` cursor, `<created_at RFC 3339>,<task id>`: split at
/// its last comma, each side trimmed.
pub fn export_cursor() -> String {
    format!(
        "^{TRIMMED}*{}{TRIMMED}*,{TRIMMED}*{}{TRIMMED}*$",
        rfc3339_body(),
        uuid_body()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, value: &str) -> bool {
        regex::Regex::new(pattern).expect("a valid pattern").is_match(value)
    }

    const UUID: &str = "550e8400-e29b-41d4-a716-446655440000";

    #[test]
    fn uuid_patterns_take_what_the_parser_takes() {
        let samples = [
            UUID.to_string(),
            UUID.to_uppercase(),
            UUID.replace('-', ""),
            format!("{{{UUID}}}"),
            format!("urn:uuid:{UUID}"),
            format!("URN:UUID:{UUID}"),
            String::new(),
            format!("{UUID}0"),
            UUID.replacen('5', "g", 1),
            format!("{{{}}}", UUID.replace('-', "")),
            format!("urn:uuid:{}", UUID.replace('-', "")),
            format!(" {UUID}"),
            format!("{UUID}\n"),
            UUID.replacen('-', "", 1),
        ];
        for sample in &samples {
            let parsed = sample.parse::<uuid::Uuid>().is_ok();
            assert_eq!(matches(&uuid(), sample), parsed, "{sample:?}");
            let trimmed = sample.trim().parse::<uuid::Uuid>().is_ok();
            assert_eq!(matches(&uuid_query(), sample), trimmed, "{sample:?}");
            let padded = format!("\u{3000}\t{sample}\u{a0}\n");
            assert_eq!(matches(&uuid_query(), &padded), trimmed, "{padded:?}");
        }
    }

    #[test]
    fn rfc3339_pattern_takes_what_chrono_takes() {
        for sample in [
            "2025-09-12T10:00:00Z",
            "2025-09-12t10:00:00z",
            "2025-09-12 10:00:00+02:00",
            "2025-09-12T10:00:00.123456789123-23:59",
            "2025-09-12T10:00:00\u{2212}05:00",
            "2024-02-29T00:00:00Z",
            "2000-02-29T00:00:00Z",
            "0000-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2023-04-31T00:00:00Z",
            "2023-12-31T23:59:60Z",
            "2023-12-31T23:59:61Z",
            "2023-12-31T24:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-00-01T00:00:00Z",
            "2023-01-00T00:00:00Z",
            "2023-01-01T00:00:00+24:00",
            "2023-01-01T00:00:00+23:60",
            "2023-01-01T00:00:00",
            "2023-01-01T00:00:00.Z",
            "2023-01-01T00:00Z",
            "2023-01-01X00:00:00Z",
            "2023-01-01T00:00:00ZZ",
            "",
            " 2025-09-12T10:00:00Z\u{2028}",
        ] {
            let parsed = chrono::DateTime::parse_from_rfc3339(sample.trim()).is_ok();
            assert_eq!(matches(&rfc3339_query(), sample), parsed, "{sample:?}");
        }
    }

    #[test]
    fn cursor_pattern_takes_what_the_export_takes() {
        for (sample, ok) in [
            (format!("2025-09-12T10:00:00Z,{UUID}"), true),
            (format!(" 2025-09-12T10:00:00.5+01:00 , {UUID} "), true),
            (format!("2025-09-12T10:00:00Z,{}", UUID.replace('-', "")), true),
            (format!("2025-09-12T10:00:00Z;{UUID}"), false),
            (format!("2025-09-12T10:00:00Z,,{UUID}"), false),
            (format!("2025-02-30T10:00:00Z,{UUID}"), false),
            ("2025-09-12T10:00:00Z,".to_string(), false),
            (UUID.to_string(), false),
        ] {
            assert_eq!(matches(&export_cursor(), &sample), ok, "{sample:?}");
        }
    }

    /// The pattern the served document gives a parameter.
    fn documented_pattern(path: &str, method: &str, name: &str) -> String {
        use utoipa::OpenApi;
        let doc = serde_json::to_value(crate::server::ApiDoc::openapi()).expect("the document serializes");
        let parameters = doc["paths"][path][method]["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let parameter = parameters
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"));
        let schema = &parameter["schema"];
        assert!(
            schema["type"] == "string",
            "{method} {path} {name} is a plain string: {schema}"
        );
        schema["pattern"].as_str().expect("a pattern").to_string()
    }

    #[test]
    fn idempotency_key_pattern_is_the_core_rule() {
        use aiopslab_core::batch::IdempotencyKey;
        for path in ["/tasks", "/tasks/batch"] {
            let pattern = documented_pattern(path, "post", "Idempotency-Key");
            for sample in [
                "retry-42".to_string(),
                "!~".to_string(),
                "x".repeat(255),
                "x".repeat(256),
                String::new(),
                "has space".to_string(),
                "tab\t".to_string(),
                "caf\u{e9}".to_string(),
                "\u{7f}".to_string(),
            ] {
                let accepted = IdempotencyKey::new(sample.clone(), "f").is_ok();
                assert_eq!(matches(&pattern, &sample), accepted, "{path}: {sample:?}");
            }
        }
    }

    #[test]
    fn metadata_pattern_is_key_colon_value_or_empty() {
        let pattern = documented_pattern("/trajectories/export", "get", "metadata");
        for (sample, ok) in [
            ("", true),
            ("run:7", true),
            ("k:", true),
            ("k:a:b", true),
            ("k:line\nbreak", true),
            ("key\n:v", true),
            (":v", false),
            ("novalue", false),
            ("\n", false),
        ] {
            assert_eq!(matches(&pattern, sample), ok, "{sample:?}");
        }
    }

    #[test]
    fn the_document_carries_the_patterns() {
        assert_eq!(
            documented_pattern("/trajectories/export", "get", "after"),
            export_cursor()
        );
        assert_eq!(
            documented_pattern("/trajectories/export", "get", "created_after"),
            rfc3339_query()
        );
        assert_eq!(documented_pattern("/tasks", "get", "group_id"), uuid_query());
        assert_eq!(documented_pattern("/tasks/{id}", "get", "id"), uuid());
    }
}
