//! Two policies side by side over the same request log: each share, the reasoning and
//! blocked shares, cost and agreement for both with the differences, and how many requests
//! change outcome.

use std::fmt;

use serde::Serialize;

use super::report::{Report, percent};

/// Two policies over the same requests.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// The policy applied today.
    pub a: Report,
    /// The policy considered.
    pub b: Report,
    /// Requests whose outcome (decision, target or refusal) differs.
    pub changed: usize,
}

impl Comparison {
    /// `a` against `b`; both over the same log.
    pub fn new(a: Report, b: Report) -> Self {
        let changed = a
            .outcomes
            .iter()
            .zip(&b.outcomes)
            .filter(|(x, y)| x != y)
            .count();
        Self { a, b, changed }
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = (&self.a, &self.b);
        let rows = |pick: &dyn Fn(&Report) -> Vec<(String, f64)>| {
            let (ra, rb) = (pick(a), pick(b));
            let mut names: Vec<String> = ra.iter().map(|r| r.0.clone()).collect();
            for (name, _) in &rb {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
            let get = |rows: &[(String, f64)], name: &str| {
                rows.iter().find(|r| r.0 == name).map_or(0.0, |r| r.1)
            };
            names
                .into_iter()
                .map(|n| {
                    let (x, y) = (get(&ra, &n), get(&rb, &n));
                    (n, x, y)
                })
                .collect::<Vec<_>>()
        };
        let decisions = rows(&|r| {
            r.decisions
                .iter()
                .map(|d| (d.name.clone(), d.share))
                .collect()
        });
        let targets = rows(&|r| {
            r.targets
                .iter()
                .map(|t| (t.target.to_string(), t.share))
                .collect()
        });
        let width = decisions
            .iter()
            .chain(&targets)
            .map(|r| r.0.len())
            .max()
            .unwrap_or(0)
            .max(16);
        writeln!(f, "A: {}\nB: {}\n", a.policy.display(), b.policy.display())?;
        let line = |f: &mut fmt::Formatter<'_>, name: &str, x: f64, y: f64| {
            writeln!(
                f,
                "{name:<width$}  {:>7}  {:>7}  {:>+7.1} pp",
                percent(x),
                percent(y),
                100.0 * (y - x)
            )
        };
        writeln!(
            f,
            "{:<width$}  {:>7}  {:>7}  {:>10}",
            "decision", "A", "B", "B - A"
        )?;
        for (name, x, y) in &decisions {
            line(f, name, *x, *y)?;
        }
        writeln!(
            f,
            "\n{:<width$}  {:>7}  {:>7}  {:>10}",
            "target", "A", "B", "B - A"
        )?;
        for (name, x, y) in &targets {
            line(f, name, *x, *y)?;
        }
        writeln!(f)?;
        line(f, "reasoning on", a.reasoning_share, b.reasoning_share)?;
        line(f, "blocked", a.blocked_share, b.blocked_share)?;
        let change = if a.cost_per_1000 > 0.0 {
            format!(
                "{:+.1}%",
                100.0 * (b.cost_per_1000 - a.cost_per_1000) / a.cost_per_1000
            )
        } else {
            String::new()
        };
        writeln!(
            f,
            "{:<width$}  {:>7.4}  {:>7.4}  {change:>10}",
            "cost per 1,000", a.cost_per_1000, b.cost_per_1000
        )?;
        if let (Some(x), Some(y)) = (&a.agreement, &b.agreement) {
            line(f, "agreement", x.agreed.value, y.agreed.value)?;
            writeln!(f, "  A {}\n  B {}", x.agreed, y.agreed)?;
        }
        writeln!(
            f,
            "\n{} of {} requests change outcome ({})",
            self.changed,
            a.requests,
            percent(if a.requests == 0 {
                0.0
            } else {
                self.changed as f64 / a.requests as f64
            })
        )?;
        write!(f, "\n{}", a.assumptions)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::what_if::report::tests::{ASSUMED, logged, resources, routed};
    use crate::what_if::report::{LabelKind, Outcome};

    #[test]
    fn a_comparison_counts_changed_outcomes_and_prints_deltas() {
        let log = vec![logged(None), logged(None)];
        let report = |outcomes: Vec<Outcome>| {
            Report::new(
                Path::new("p"),
                &resources(),
                &log,
                &outcomes,
                &ASSUMED,
                LabelKind::Model,
            )
        };
        let a = report(vec![
            routed("default", "tiny", "off", 4),
            routed("default", "tiny", "off", 4),
        ]);
        let b = report(vec![
            routed("default", "tiny", "off", 4),
            routed("reasoning", "big", "on", 4),
        ]);
        let c = Comparison::new(a, b);
        assert_eq!(c.changed, 1);
        let text = c.to_string();
        assert!(text.contains("+50.0 pp"), "{text}");
        assert!(text.contains("1 of 2 requests change outcome"), "{text}");
    }
}
