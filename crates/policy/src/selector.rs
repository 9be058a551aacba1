//! Label selectors with the API's semantics (metav1.LabelSelector).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::PolicyError;

/// Labels of a pod or a namespace.
pub type Labels = BTreeMap<String, String>;

/// A selector as the API writes it: `matchLabels` and `matchExpressions`,
/// all of which must hold. An empty selector selects everything (the API:
/// "if present but empty, it selects all"); whether an absent selector means
/// "all" or "the policy's namespace" is decided by the field holding it, not
/// here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

/// One `matchExpressions` item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// The selector that selects everything (`{}`).
    pub fn all() -> Self {
        Self::default()
    }

    /// `matchLabels` only.
    pub fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            match_labels: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    /// Adds one expression (builder style, for adapters and tests).
    pub fn with(mut self, key: &str, operator: Operator, values: &[&str]) -> Self {
        self.match_expressions.push(Requirement {
            key: key.to_string(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        });
        self
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// The API server's validation (ValidateLabelSelector): `In`/`NotIn`
    /// need at least one value, `Exists`/`DoesNotExist` none, keys are
    /// qualified names and values label values.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (key, value) in &self.match_labels {
            check_key(key)?;
            check_value(value)?;
        }
        for r in &self.match_expressions {
            check_key(&r.key)?;
            for v in &r.values {
                check_value(v)?;
            }
            match r.operator {
                Operator::In | Operator::NotIn if r.values.is_empty() => {
                    return Err(PolicyError::Selector(format!(
                        "operator {:?} on key {:?} needs at least one value",
                        r.operator, r.key
                    )))
                }
                Operator::Exists | Operator::DoesNotExist if !r.values.is_empty() => {
                    return Err(PolicyError::Selector(format!(
                        "operator {:?} on key {:?} takes no values",
                        r.operator, r.key
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether `labels` satisfy every requirement. An expression of the
    /// wrong shape (`NotIn` without values, `Exists` with some) matches
    /// nothing, so a selector the API would reject never selects; the
    /// syntax of keys and values is `validate`'s (callers check it once per
    /// policy, not per label set).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_expressions.iter().all(|r| r.well_shaped())
            && self
                .match_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    fn well_shaped(&self) -> bool {
        match self.operator {
            Operator::In | Operator::NotIn => !self.values.is_empty(),
            Operator::Exists | Operator::DoesNotExist => self.values.is_empty(),
        }
    }

    fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            // NotIn holds for a missing key too (apimachinery's selector).
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A label key is a qualified name: an optional DNS-subdomain prefix and
/// `/`, then a name of at most 63 characters (IsQualifiedName).
fn check_key(key: &str) -> Result<(), PolicyError> {
    let bad = || {
        Err(PolicyError::Selector(format!("{key:?} is not a valid label key (an optional DNS prefix and '/', then up to 63 of [A-Za-z0-9-_.], alphanumeric at both ends)")))
    };
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if p.is_empty() || p.len() > 253 || !p.split('.').all(label_ok) {
            return bad();
        }
    }
    if name.is_empty() || !valid_value(name) {
        return bad();
    }
    Ok(())
}

/// A label value: empty, or up to 63 of `[A-Za-z0-9-_.]` starting and
/// ending alphanumeric (IsValidLabelValue).
fn valid_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && v.as_bytes()[0].is_ascii_alphanumeric()
            && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric())
}

fn check_value(v: &str) -> Result<(), PolicyError> {
    if valid_value(v) {
        Ok(())
    } else {
        Err(PolicyError::Selector(format!("{v:?} is not a valid label value (up to 63 of [A-Za-z0-9-_.], alphanumeric at both ends)")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn operators_truth_table() {
        let sel = |op, vals: &[&str]| LabelSelector::all().with("k", op, vals);
        let none = l(&[]);
        let a = l(&[("k", "a")]);
        let b = l(&[("k", "b")]);
        let rows = [
            (sel(Operator::In, &["a"]), [false, true, false]),
            (sel(Operator::NotIn, &["a"]), [true, false, true]),
            (sel(Operator::Exists, &[]), [false, true, true]),
            (sel(Operator::DoesNotExist, &[]), [true, false, false]),
            (LabelSelector::labels([("k", "a")]), [false, true, false]),
            (LabelSelector::all(), [true, true, true]),
        ];
        for (s, want) in rows {
            let got = [s.matches(&none), s.matches(&a), s.matches(&b)];
            assert_eq!(got, want, "{s:?}");
        }
    }

    #[test]
    fn labels_and_expressions_must_all_hold() {
        let s = LabelSelector::labels([("app", "web")]).with("tier", Operator::In, &["1", "2"]);
        assert!(s.matches(&l(&[("app", "web"), ("tier", "2")])));
        assert!(!s.matches(&l(&[("app", "web"), ("tier", "3")])));
        assert!(!s.matches(&l(&[("app", "db"), ("tier", "1")])));
    }

    #[test]
    fn validation_follows_the_api() {
        let bad = [
            LabelSelector::all().with("k", Operator::In, &[]),
            LabelSelector::all().with("k", Operator::NotIn, &[]),
            LabelSelector::all().with("k", Operator::Exists, &["x"]),
            LabelSelector::all().with("k", Operator::DoesNotExist, &["x"]),
            LabelSelector::all().with("", Operator::Exists, &[]),
            LabelSelector::labels([("", "v")]),
            LabelSelector::labels([("-k", "v")]),
            LabelSelector::labels([("Example.com/k", "v")]),
            LabelSelector::labels([("/k", "v")]),
            LabelSelector::labels([("k", "-v")]),
            LabelSelector::labels([("k", "a b")]),
            LabelSelector::all().with("k", Operator::In, &["ok", "not ok"]),
            LabelSelector::labels([("k".repeat(64).as_str(), "v")]),
        ];
        for (i, s) in bad.into_iter().enumerate() {
            assert!(s.validate().is_err(), "{s:?} should be rejected");
            if i < 4 {
                // Wrong shapes match nothing even unvalidated.
                assert!(
                    !s.matches(&l(&[("k", "x")])),
                    "invalid {s:?} must match nothing"
                );
            }
        }
        let good = [
            LabelSelector::all().with("k", Operator::NotIn, &["x"]),
            LabelSelector::labels([("kubernetes.io/metadata.name", "x")]),
            LabelSelector::labels([("app.kubernetes.io/name", "")]),
            LabelSelector::labels([("K_8.s", "V-1_2.3")]),
        ];
        for s in good {
            assert!(s.validate().is_ok(), "{s:?} should be accepted");
        }
    }

    #[test]
    fn json_shape_is_the_api_shape() {
        let s: LabelSelector = serde_json::from_str(
            r#"{"matchLabels":{"a":"b"},"matchExpressions":[{"key":"k","operator":"NotIn","values":["x"]}]}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            LabelSelector::labels([("a", "b")]).with("k", Operator::NotIn, &["x"])
        );
        let empty: LabelSelector = serde_json::from_str("{}").unwrap();
        assert!(empty.is_empty());
    }
}
