//! The Prometheus text exposition format (version 0.0.4), written by hand:
//! every value is read from the libraries' counters at scrape time, so no
//! registry keeps a second copy, and nothing on the message path changes
//! for the sake of the format.

use std::fmt::{Display, Write as _};

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A scrape's text, built one metric family at a time.
#[derive(Debug, Default)]
pub(super) struct Text {
    out: String,
}

/// A metric family's type.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    /// Only goes up (a name ending `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, a sum and a count.
    Histogram,
}

impl Text {
    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub(super) fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample of the family begun last.
    pub(super) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (at, (label, value)) in labels.iter().enumerate() {
                if at > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// A family of one unlabelled sample.
    pub(super) fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// A histogram's samples: `counts` per bucket of `bounds` (not
    /// cumulative) and one more for larger values; `sum` of the values.
    pub(super) fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
    ) -> &mut Self {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (bound, count) in bounds.iter().zip(counts) {
            cumulative += count;
            let le = bound.to_string();
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, cumulative);
        }
        let total: u64 = counts.iter().sum();
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, total);
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, total)
    }

    /// The text, ending with a newline.
    pub(super) fn finish(self) -> String {
        self.out
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_histograms() {
        let mut text = Text::default();
        text.single("a_total", Kind::Counter, "A \\ thing", 3);
        text.family("h_seconds", Kind::Histogram, "H");
        text.histogram("h_seconds", &[("k", "a\"b")], &[0.1, 1.0], &[1, 2, 3], 4.5);
        let text = text.finish();
        assert!(text.starts_with("# HELP a_total A \\\\ thing\n# TYPE a_total counter\na_total 3\n"));
        assert!(text.contains("h_seconds_bucket{k=\"a\\\"b\",le=\"0.1\"} 1\n"));
        assert!(text.contains("h_seconds_bucket{k=\"a\\\"b\",le=\"1\"} 3\n"));
        assert!(text.contains("h_seconds_bucket{k=\"a\\\"b\",le=\"+Inf\"} 6\n"));
        assert!(text.contains("h_seconds_count{k=\"a\\\"b\"} 6\n"));
    }
}
