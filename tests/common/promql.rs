//! Just enough of PromQL and of the Prometheus text format to list the metric names, labels
//! and label values an expression (or a text) uses, and those a scrape has: for the tests that
//! keep the monitoring examples in step with what gatehouse exports. Not a PromQL parser:
//! string literals outside selectors and nested parentheses in `by (...)` are not handled
//! (the examples have none).

use std::collections::{BTreeMap, BTreeSet};

/// Labels Prometheus adds to every scraped sample (the target's).
pub const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// Sample name (histograms: `_bucket`, `_sum`, `_count`) -> label -> values seen.
pub type Exported = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// One label matcher of a selector (or one label of a sample: `=`).
#[derive(Debug)]
pub struct Matcher {
    /// The label name.
    pub label: String,
    /// `=`, `!=`, `=~` or `!~`.
    pub op: String,
    /// The value, unescaped.
    pub value: String,
}

/// A `gatehouse_*` metric named, with the matchers in braces after it (if any).
#[derive(Debug)]
pub struct Selector {
    /// The sample name as written (`gatehouse_x_bucket` for a histogram's buckets).
    pub metric: String,
    /// Its label matchers.
    pub matchers: Vec<Matcher>,
}

/// What an expression (or a text) names.
#[derive(Debug, Default)]
pub struct Usage {
    /// Every `gatehouse_*` metric, with the label matchers given it.
    pub selectors: Vec<Selector>,
    /// Labels in `by`, `without`, `on`, `ignoring` and the like (`le` of a quantile).
    pub groupings: Vec<String>,
    /// Labels the expression's result is read by (legends, `$labels.x`).
    pub output_labels: Vec<String>,
}

impl Usage {
    /// Names only: for prose, where "by (reason, ...)" is not a grouping.
    pub fn without_groupings(mut self) -> Self {
        self.groupings.clear();
        self
    }
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// `{label op "value", ...}` from the start of `s` (past the `{`): the matchers, and the
/// rest after the `}`. Also reads the label sets of exposition lines.
fn matchers(s: &str) -> (Vec<Matcher>, &str) {
    let mut found = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return (found, after);
        }
        let label_end = rest.find(|c: char| !ident_char(c)).unwrap_or(rest.len());
        let label = rest[..label_end].to_owned();
        rest = rest[label_end..].trim_start();
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| rest.starts_with(op));
        let (Some(op), false) = (op, label.is_empty()) else {
            return (found, rest);
        };
        rest = rest[op.len()..].trim_start();
        let Some(quoted) = rest.strip_prefix('"') else {
            return (found, rest);
        };
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let mut end = quoted.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| c)),
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        found.push(Matcher {
            label,
            op: op.to_owned(),
            value,
        });
        rest = &quoted[end..];
    }
}

/// The samples of a scrape in the text format.
pub fn exported(scrape: &str) -> Exported {
    let mut exported = Exported::new();
    for line in scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = exported.entry(line[..name_end].to_owned()).or_default();
        if let Some(set) = line[name_end..].strip_prefix('{') {
            for m in matchers(set).0 {
                labels.entry(m.label).or_default().insert(m.value);
            }
        }
    }
    exported
}

/// The keywords followed by a list of labels.
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The `gatehouse_*` selectors and the grouping labels of `text`.
pub fn usage(text: &str) -> Usage {
    let mut usage = Usage::default();
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        let word_end = rest[start..]
            .find(|c: char| !ident_char(c))
            .map_or(rest.len(), |n| start + n);
        let word = &rest[start..word_end];
        rest = &rest[word_end..];
        let after = rest.trim_start();
        if word.starts_with("gatehouse_") {
            let (matchers, next) = match after.strip_prefix('{') {
                Some(set) => matchers(set),
                None => (Vec::new(), rest),
            };
            usage.selectors.push(Selector {
                metric: word.to_owned(),
                matchers,
            });
            rest = next;
        } else if GROUPING.contains(&word)
            && let Some(list) = after.strip_prefix('(')
        {
            let end = list.find(')').unwrap_or(list.len());
            usage.groupings.extend(
                list[..end]
                    .split(',')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    usage
}

/// Label names after `marker` in `text`: `{{reason}}` (legends) or `$labels.reason`.
pub fn templated_labels(text: &str, marker: &str) -> Vec<String> {
    text.split(marker)
        .skip(1)
        .map(|after| {
            after
                .trim_start()
                .chars()
                .take_while(|c| ident_char(*c))
                .collect::<String>()
        })
        .filter(|label| !label.is_empty())
        .collect()
}

/// What `usage` names that `exported` has not: metrics, labels, and (with `values`) the
/// value of each `=` matcher.
pub fn unknown(exported: &Exported, usage: &Usage, values: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let mut labels: BTreeSet<&str> = TARGET_LABELS.into_iter().collect();
    for selector in &usage.selectors {
        let Some(known) = exported.get(&selector.metric) else {
            problems.push(format!("metric {} is not exported", selector.metric));
            continue;
        };
        labels.extend(known.keys().map(String::as_str));
        for m in &selector.matchers {
            if TARGET_LABELS.contains(&m.label.as_str()) {
                continue;
            }
            match known.get(&m.label) {
                None => problems.push(format!("{} has no label {}", selector.metric, m.label)),
                Some(seen) if values && m.op == "=" && !seen.contains(&m.value) => {
                    problems.push(format!(
                        "{}{{{}=\"{}\"}}: value not seen (seen: {seen:?})",
                        selector.metric, m.label, m.value
                    ))
                }
                Some(_) => {}
            }
        }
    }
    for label in &usage.groupings {
        if !labels.contains(label.as_str()) {
            problems.push(format!(
                "grouping by {label}, a label none of its metrics has"
            ));
        }
    }
    // After an aggregation only its grouping labels are left.
    let output: BTreeSet<&str> = if usage.groupings.is_empty() {
        labels.clone()
    } else {
        usage.groupings.iter().map(String::as_str).collect()
    };
    for label in &usage.output_labels {
        if !output.contains(label.as_str()) {
            problems.push(format!(
                "reads label {label} of a result that has only {output:?}"
            ));
        }
    }
    problems
}
