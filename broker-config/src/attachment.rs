//! A task's CSV attachment: decoded, size-checked, parsed and checked against the columns its
//! system needs, once, at the edge. The bot agent parses with the same code, so a file the API
//! accepted is a file the bot can read.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::System;

/// The columns of a Vivo360 user-creation CSV, one user per row (see examples/vivo360-users.csv).
pub const VIVO360_COLUMNS: [&str; 4] = ["name", "email", "login", "profile"];

/// Why an attachment was refused. Each message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentError {
    /// The text is not valid base64.
    #[error("attachment is not valid base64: {0}")]
    InvalidBase64(String),
    /// The decoded file is over the size limit.
    #[error("attachment is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The file is not UTF-8 text.
    #[error("attachment is not UTF-8 text (invalid byte at offset {0})")]
    NotUtf8(usize),
    /// The file has no header line.
    #[error("attachment is empty; expected a CSV with a header line")]
    Empty,
    /// The file is not well-formed CSV.
    #[error("attachment is not valid CSV: {0}")]
    Malformed(String),
    /// The header lacks columns the system needs.
    #[error("attachment lacks the column(s) {missing} that {system} needs (found: {found})")]
    MissingColumns {
        /// The system the task targets.
        system: System,
        /// The missing columns, comma separated.
        missing: String,
        /// The columns the header has, comma separated.
        found: String,
    },
    /// The file has a header but no data rows.
    #[error("attachment has a header but no rows")]
    NoRows,
}

/// A parsed CSV attachment. Header names are trimmed and lowercased; rows all have the header's
/// width (the parser refuses ragged rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    text: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Attachment {
    /// Decodes base64 text (whitespace and line breaks are ignored, as `base64` wraps its output)
    /// and parses the file. `max_bytes` bounds the decoded size.
    pub fn from_base64(
        encoded: &str,
        system: &System,
        required: &[&str],
        max_bytes: usize,
    ) -> Result<Attachment, AttachmentError> {
        let compact: String = encoded.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        // Refuse before decoding: base64 carries 3 bytes per 4 characters.
        if compact.len() / 4 * 3 > max_bytes.saturating_add(2) {
            return Err(AttachmentError::TooLarge { limit: max_bytes });
        }
        let bytes =
            BASE64.decode(compact).map_err(|e| AttachmentError::InvalidBase64(e.to_string()))?;
        Attachment::from_bytes(bytes, system, required, max_bytes)
    }

    /// Parses a raw file (an upload, or decoded base64).
    pub fn from_bytes(
        bytes: Vec<u8>,
        system: &System,
        required: &[&str],
        max_bytes: usize,
    ) -> Result<Attachment, AttachmentError> {
        if bytes.len() > max_bytes {
            return Err(AttachmentError::TooLarge { limit: max_bytes });
        }
        let text = String::from_utf8(bytes)
            .map_err(|e| AttachmentError::NotUtf8(e.utf8_error().valid_up_to()))?;
        Attachment::parse(text, system, required)
    }

    /// Parses CSV text. A UTF-8 byte-order mark (spreadsheet exports) is dropped, and a header
    /// with semicolons but no commas (spreadsheets in Brazilian locales) selects `;` as delimiter.
    /// `required` are the columns `system`'s contract needs (none: any header will do).
    pub fn parse(
        text: String,
        system: &System,
        required: &[&str],
    ) -> Result<Attachment, AttachmentError> {
        let body = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let first_line = body.lines().next().unwrap_or_default();
        if first_line.trim().is_empty() {
            return Err(AttachmentError::Empty);
        }
        let delimiter =
            if !first_line.contains(',') && first_line.contains(';') { b';' } else { b',' };
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(true)
            .from_reader(body.as_bytes());
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| AttachmentError::Malformed(e.to_string()))?
            .iter()
            .map(|h| h.trim().to_lowercase())
            .collect();
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|c| !headers.iter().any(|h| h.eq_ignore_ascii_case(c)))
            .collect();
        if !missing.is_empty() {
            return Err(AttachmentError::MissingColumns {
                system: system.clone(),
                missing: missing.join(", "),
                found: headers.join(", "),
            });
        }
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| AttachmentError::Malformed(e.to_string()))?;
            rows.push(record.iter().map(|field| field.trim().to_owned()).collect());
        }
        if rows.is_empty() {
            return Err(AttachmentError::NoRows);
        }
        Ok(Attachment { text, headers, rows })
    }

    /// The file as it was given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The file as base64, as stored and sent in messages.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.text.as_bytes())
    }

    /// The header names, trimmed and lowercased.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// The number of data rows.
    pub fn row_count(&self) -> usize {
        self.rows.len()
    }

    /// The data rows, each as wide as the header.
    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }

    /// The value of `column` in row `index` (0-based), if both exist.
    pub fn field(&self, index: usize, column: &str) -> Option<&str> {
        let position = self.headers.iter().position(|h| h == column)?;
        self.rows.get(index)?.get(position).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USERS: &str = "name,email,login,profile\nAna Souza,ana@example.com,ana.souza,agent\nBruno Lima,bruno@example.com,bruno.lima,supervisor\n";

    #[test]
    fn parses_a_vivo360_csv_from_base64() {
        let attachment = Attachment::from_base64(
            &BASE64.encode(USERS),
            &System::VIVO360,
            &VIVO360_COLUMNS,
            1024,
        )
        .expect("valid");
        assert_eq!(attachment.row_count(), 2);
        assert_eq!(attachment.headers(), ["name", "email", "login", "profile"]);
        assert_eq!(attachment.field(1, "login"), Some("bruno.lima"));
        assert_eq!(attachment.as_str(), USERS);
        assert_eq!(attachment.to_base64(), BASE64.encode(USERS));
    }

    #[test]
    fn tolerates_wrapped_base64_a_bom_semicolons_and_header_case() {
        let wrapped: String = BASE64
            .encode(USERS)
            .as_bytes()
            .chunks(20)
            .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
            .collect();
        assert!(
            Attachment::from_base64(&wrapped, &System::VIVO360, &VIVO360_COLUMNS, 1024).is_ok()
        );

        let excel = "\u{feff}Name;EMAIL;Login;Profile\nAna;ana@example.com;ana;agent\n";
        let attachment =
            Attachment::parse(excel.to_owned(), &System::VIVO360, &VIVO360_COLUMNS).expect("valid");
        assert_eq!(attachment.field(0, "email"), Some("ana@example.com"));
    }

    #[test]
    fn refuses_bad_files_with_a_reason() {
        let vivo = &System::VIVO360;
        let cols = &VIVO360_COLUMNS;
        assert!(matches!(
            Attachment::from_base64("not base64!", vivo, cols, 1024),
            Err(AttachmentError::InvalidBase64(_))
        ));
        assert_eq!(
            Attachment::from_bytes(vec![b'a', 0xff, 0xfe], vivo, cols, 1024),
            Err(AttachmentError::NotUtf8(1))
        );
        assert_eq!(
            Attachment::from_bytes(USERS.as_bytes().to_vec(), vivo, cols, 10),
            Err(AttachmentError::TooLarge { limit: 10 })
        );
        assert_eq!(
            Attachment::from_base64(&BASE64.encode(USERS), vivo, cols, 10),
            Err(AttachmentError::TooLarge { limit: 10 })
        );
        assert_eq!(Attachment::parse(String::new(), vivo, cols), Err(AttachmentError::Empty));
        assert_eq!(
            Attachment::parse("name,email,login,profile\n".into(), vivo, cols),
            Err(AttachmentError::NoRows)
        );
        let missing = Attachment::parse("name,mail\nAna,a@b.c\n".into(), vivo, cols)
            .expect_err("lacks columns")
            .to_string();
        assert_eq!(
            missing,
            "attachment lacks the column(s) email, login, profile that VIVO360 needs (found: name, mail)"
        );
        assert!(matches!(
            Attachment::parse("name,email,login,profile\nAna,a@b.c\n".into(), vivo, cols),
            Err(AttachmentError::Malformed(_))
        ));
    }

    #[test]
    fn an_unbounded_limit_does_not_overflow() {
        let attachment = Attachment::from_base64(
            &BASE64.encode(USERS),
            &System::VIVO360,
            &VIVO360_COLUMNS,
            usize::MAX,
        );
        assert_eq!(attachment.map(|a| a.row_count()), Ok(2));
    }

    #[test]
    fn systems_without_csv_columns_accept_any_header() {
        let attachment =
            Attachment::parse("a,b\n1,2\n".into(), &System::NOOP, &[]).expect("any csv");
        assert_eq!(attachment.row_count(), 1);
    }
}
