//! `[worker] mode` and `[experiment]` (SPEC §14): shadow mode, a canary
//! share, and an A/B split between two rule sets.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::diag::SourceError;

/// `[worker] mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Assign: the calls reach HelpCrunch.
    #[default]
    Live,
    /// Decide and record everything, write nothing to HelpCrunch.
    Shadow,
}

/// `[experiment]`: absent, assignd assigns every chat with `[rules] path`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// The canary's share of chats that assignd assigns; the rest are left
    /// to HelpCrunch's routing or to people.
    pub share: Option<Spanned<f64>>,
    /// Arm b's rules (a file or a directory, like `[rules] path`).
    pub b_rules: Option<PathBuf>,
    /// The share of assigned chats that go to arm b (default one half).
    pub b_share: Option<Spanned<f64>>,
}

impl Experiment {
    /// Whether any experiment runs.
    pub fn runs(&self) -> bool {
        self.share.is_some() || self.b_rules.is_some()
    }

    /// The share assignd assigns (1 without a canary).
    pub fn share(&self) -> f64 {
        self.share.as_ref().map_or(1.0, |s| *s.get_ref())
    }

    /// Arm b's share of the assigned chats (0 without arm b).
    pub fn b_share(&self) -> f64 {
        match (&self.b_rules, &self.b_share) {
            (None, _) => 0.0,
            (Some(_), Some(s)) => *s.get_ref(),
            (Some(_), None) => 0.5,
        }
    }

    pub(super) fn validate(&self, path: &Path, text: &str) -> Result<(), SourceError> {
        for (name, share) in [("share", &self.share), ("b_share", &self.b_share)] {
            if let Some(s) = share
                && !(0.0..=1.0).contains(s.get_ref())
            {
                return Err(SourceError::new(
                    path,
                    text,
                    s.span(),
                    format!(
                        "[experiment] {name} ({}) must be between 0 and 1: a share of the chats",
                        s.get_ref()
                    ),
                ));
            }
        }
        if let (Some(s), None) = (&self.b_share, &self.b_rules) {
            return Err(SourceError::new(
                path,
                text,
                s.span(),
                "[experiment] b_share is set but b_rules is not: arm b needs its rule set"
                    .to_string(),
            ));
        }
        Ok(())
    }
}
