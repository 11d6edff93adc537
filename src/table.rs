//! Plain-text tables and human units for the operator's terminal.

use unicode_width::UnicodeWidthStr;

/// A table with a header row; columns are sized to their widest cell, by
/// the width a terminal gives it (a Hangul or Han character takes two
/// columns, a combining mark none), so `KBS 한국방송` lines up with `TRT`.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self { headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    /// Adds a row (missing cells are blank).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, no trailing spaces.
    pub fn render(&self) -> String {
        let cols = self.headers.len();
        let mut width: Vec<usize> = self.headers.iter().map(|h| h.width()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.width());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, w) in width.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                s += c;
                if i + 1 < cols {
                    s += &" ".repeat(w - c.width() + 2);
                }
            }
            s.trim_end().to_owned()
        };
        let mut out = line(&self.headers);
        out.push('\n');
        for r in &self.rows {
            out += &line(r);
            out.push('\n');
        }
        out
    }
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
}
