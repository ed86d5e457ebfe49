//! The command's text tables (`celerity beat list`, `celerity bench`): columns without borders,
//! two spaces apart, laid out by comfy-table.
//!
//! It only lays out cells; what goes into them is the caller's business.

use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, Table};

/// `header` and `rows` as a table: a header line, then one line per row, no borders, columns two
/// spaces apart and as wide as their widest cell, the columns at the indices in `right_aligned`
/// aligned right; no line ends in spaces.
pub(crate) fn plain<const N: usize>(
    header: [&str; N],
    right_aligned: &[usize],
    rows: impl IntoIterator<Item = [String; N]>,
) -> String {
    let mut table = Table::new();
    table.load_style(NOTHING).set_header(header).add_rows(rows);
    for (index, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, 2));
        if right_aligned.contains(&index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table.trim_fmt()
}

/// A Unix-milliseconds time as RFC 3339 UTC, or `-`.
pub(crate) fn time(ms: Option<u64>) -> String {
    ms.and_then(|ms| i64::try_from(ms).ok())
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || "-".to_owned(),
            |time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_two_spaces_apart_and_as_wide_as_their_widest_cell() {
        let text = plain(
            ["NAME", "RUNS", "NOTE"],
            &[1],
            [
                ["a".to_owned(), "1".to_owned(), "-".to_owned()],
                ["longer".to_owned(), "100".to_owned(), String::new()],
            ],
        );
        assert_eq!(text, "NAME    RUNS  NOTE\na          1  -\nlonger   100");
    }
}
