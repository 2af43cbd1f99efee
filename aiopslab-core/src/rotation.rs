//! [`Rotation`]: whose turn it is among the [experiments](crate::experiment) — the round-robin state of the
//! fair-share claim.
//!
//! Why a clock of its own: "least recently served" needs only an order of the claims, not their times (two
//! claims in one millisecond, or in one statement, are still ordered), and it is a fairness preference, not a
//! rule a store must agree on with others: each store keeps its own (the embedded store under its lock, a
//! PostgreSQL store per process), and a lost rotation (a restart) only means the next claims start a new round.

use std::collections::HashMap;

/// How many classes a rotation remembers; past it, the least recently served are forgotten (they then count as
/// never served, which is what they nearly are).
pub const ROTATION_MEMORY: usize = 4096;

/// The rotation: for each class (an experiment, or `None` for the tasks without one) when it was last served,
/// on a clock that ticks once per task started.
#[derive(Debug, Clone, Default)]
pub struct Rotation {
    served: u64,
    last: HashMap<Option<String>, u64>,
}

impl Rotation {
    /// A rotation in which no class was served yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// When `class` was last served (a higher value: more recently); 0 when never.
    pub fn turn(&self, class: &Option<String>) -> u64 {
        self.last.get(class).copied().unwrap_or(0)
    }

    /// Records that a task of `class` started now.
    pub fn serve(&mut self, class: &Option<String>) {
        self.served += 1;
        self.last.insert(class.clone(), self.served);
        if self.last.len() > ROTATION_MEMORY {
            self.forget_oldest();
        }
    }

    /// The `n` classes served most recently, with their turns (in no particular order).
    pub fn recent(&self, n: usize) -> Vec<(Option<String>, u64)> {
        let mut all: Vec<(Option<String>, u64)> = self.last.iter().map(|(c, t)| (c.clone(), *t)).collect();
        if all.len() > n {
            all.select_nth_unstable_by(n, |a, b| b.1.cmp(&a.1));
            all.truncate(n);
        }
        all
    }

    /// Forgets the least recently served half.
    fn forget_oldest(&mut self) {
        let keep = self.recent(ROTATION_MEMORY / 2);
        self.last = keep.into_iter().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_served_has_the_lowest_turn() {
        let mut rotation = Rotation::new();
        let (a, b) = (Some("a".to_string()), Some("b".to_string()));
        assert_eq!(rotation.turn(&a), 0, "never served");
        rotation.serve(&a);
        rotation.serve(&None);
        rotation.serve(&b);
        assert!(rotation.turn(&a) < rotation.turn(&None) && rotation.turn(&None) < rotation.turn(&b));
        rotation.serve(&a);
        assert!(rotation.turn(&a) > rotation.turn(&b));
        let recent = rotation.recent(2);
        assert_eq!(recent.len(), 2);
        assert!(recent.iter().all(|(class, _)| class == &a || class == &b));
    }

    #[test]
    fn memory_is_bounded() {
        let mut rotation = Rotation::new();
        for i in 0..(ROTATION_MEMORY + 10) {
            rotation.serve(&Some(format!("e{i}")));
        }
        assert!(rotation.last.len() <= ROTATION_MEMORY);
        assert!(
            rotation.turn(&Some(format!("e{}", ROTATION_MEMORY + 9))) > 0,
            "the latest is kept"
        );
        assert_eq!(rotation.turn(&Some("e0".into())), 0, "the oldest is forgotten");
    }
}
