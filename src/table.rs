//! Plain-text tables and human units for the operator's terminal.

/// A table with a header row; columns are sized to their widest cell, by
/// the width a terminal gives it (a Hangul or Han character takes two
/// columns, a combining mark none), so `KBS 한국방송` lines up with `TRT`.
/// On a terminal, a table wider than it has its long cells cut (`…`) so
/// every row stays one line; piped, cells are whole, for scripts.
/// Laid out by comfy-table.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// The ellipsis a cut cell ends with.
pub const CUT: &str = "…";

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self { headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    /// Adds a row (missing cells are blank, extra ones dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, no trailing spaces; cut to the
    /// width of the terminal stdout is, if it is one.
    pub fn render(&self) -> String {
        self.render_within(terminal_columns())
    }

    /// The table as text, every line at most `columns` wide when given
    /// (long cells cut, ending with [`CUT`]).
    pub fn render_within(&self, columns: Option<u16>) -> String {
        use comfy_table::{ContentArrangement, Row};
        let n = self.headers.len();
        let row = |cells: &[String]| {
            let mut r = Row::from((0..n).map(|i| cells.get(i).cloned().unwrap_or_default()));
            r.max_height(1);
            r
        };
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::NOTHING).set_truncation_indicator(CUT);
        t.set_header(row(&self.headers));
        for r in &self.rows {
            t.add_row(row(r));
        }
        if let Some(w) = columns {
            t.set_content_arrangement(ContentArrangement::Dynamic).set_width(w);
        }
        // Two spaces between columns, none around the table.
        for (i, c) in t.column_iter_mut().enumerate() {
            c.set_padding((0, if i + 1 < n { 2 } else { 0 }));
        }
        let mut out = String::new();
        for line in t.lines() {
            out += line.trim_end();
            out.push('\n');
        }
        out
    }
}

/// The width of the terminal stdout is, if it is one.
pub fn terminal_columns() -> Option<u16> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    // SAFETY: winsize is plain integers; all zeroes is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills the winsize it is handed; nothing else.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some(ws.ws_col)
}

/// `1.5 MB`, `920 kB`, `12 B`.
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.0} kB", n / 1e3)
    } else {
        format!("{n} B")
    }
}

/// `4.21 Mbit/s`, `96 kbit/s`.
pub fn bitrate(bps: u64) -> String {
    let b = bps as f64;
    if b >= 1e6 { format!("{:.2} Mbit/s", b / 1e6) } else { format!("{:.0} kbit/s", b / 1e3) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unicode_width::UnicodeWidthStr;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["wide cell".into(), "x".into()]);
        assert_eq!(t.render(), "A          LONGER\nwide cell  x\n");
        assert_eq!(bytes(1_500_000), "1.5 MB");
        assert_eq!(bitrate(4_210_000), "4.21 Mbit/s");
    }

    #[test]
    fn wide_characters_take_two_columns_and_still_line_up() {
        let mut t = Table::new(&["CHANNEL", "COUNTRY"]);
        t.row(vec!["KBS 한국방송".into(), "KR".into()]);
        t.row(vec!["CCTV 中央电视台".into(), "CN".into()]);
        t.row(vec!["TRT".into(), "TR".into()]);
        let text = t.render();
        // The second column starts at the same terminal column on every line.
        let starts: Vec<usize> = text
            .lines()
            .map(|l| {
                let cut = l.rfind("  ").map_or(0, |i| i + 2);
                l[..cut].width()
            })
            .collect();
        assert_eq!(starts, [17, 17, 17, 17], "{text}");
        assert_eq!(text.lines().nth(1), Some("KBS 한국방송     KR"));
    }

    #[test]
    fn on_a_narrow_terminal_long_cells_are_cut_and_rows_stay_one_line() {
        let mut t = Table::new(&["CHANNEL", "PROTO", "LAST ERROR"]);
        let error = "srtsink: connection to 203.0.113.7:9000 refused by the partner's listener".to_owned();
        t.row(vec!["kr-kbs".into(), "srt".into(), error.clone()]);
        t.row(vec!["CCTV 中央电视台 综合频道 国际版".into(), "udp".into(), String::new()]);
        let text = t.render_within(Some(50));
        assert_eq!(text.lines().count(), 3, "{text}");
        for line in text.lines() {
            assert!(line.width() <= 50, "{} columns: {line}", line.width());
        }
        assert!(text.lines().nth(1).unwrap().starts_with("kr-kbs"), "{text}");
        assert!(text.contains(CUT) && !text.contains(&error), "the error was not cut: {text}");
        // Piped (no terminal), nothing is cut.
        assert!(t.render_within(None).contains(&error));
    }
}
