//! Markdown tables and percentiles.

/// A markdown table with a title and notes under it.
#[derive(Debug, Default)]
pub struct Table {
    title: String,
    headers: Vec<String>,
    /// Leading columns holding text (left-aligned); the others hold figures (right-aligned).
    text_columns: usize,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    pub fn new(title: &str, headers: &[&str], text_columns: usize) -> Self {
        Self {
            title: title.to_owned(),
            text_columns,
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            ..Self::default()
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The table as markdown, columns padded for reading as plain text too.
    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(n) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, width) in widths.iter().enumerate() {
                let cell = cells.get(i).map_or("", String::as_str);
                let pad = width.saturating_sub(cell.chars().count());
                if i < self.text_columns {
                    s.push_str(&format!(" {cell}{} |", " ".repeat(pad)));
                } else {
                    s.push_str(&format!(" {}{cell} |", " ".repeat(pad)));
                }
            }
            s
        };
        let mut out = format!("## {}\n\n{}\n|", self.title, line(&self.headers));
        for (i, width) in widths.iter().enumerate() {
            let dashes = "-".repeat((*width).max(3));
            out.push_str(&if i < self.text_columns {
                format!(" {dashes} |")
            } else {
                format!(" {}: |", &dashes[1..])
            });
        }
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                out.push_str(&format!("- {note}\n"));
            }
        }
        out
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of sorted samples; 0 when there are none.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Mean of samples; 0 when there are none.
pub fn mean(samples: &[u64]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.iter().map(|&s| s as f64).sum::<f64>() / samples.len() as f64
}

/// Nanoseconds as microseconds with `decimals` decimals.
pub fn us(nanos: f64, decimals: usize) -> String {
    format!("{:.decimals$}", nanos / 1000.0)
}

/// Nanoseconds (integer) as microseconds.
pub fn us_int(nanos: u64, decimals: usize) -> String {
    us(nanos as f64, decimals)
}
