//! Question groups: the same question from many people, found online as flagged posts get
//! their sentence embeddings.
//!
//! A post joins the open group whose centroid (its members' unit vectors summed, then
//! normalised) is nearest, when the cosine is at least [`Rules::similarity`]; otherwise it
//! opens a group of its own. A group closes after [`Rules::quiet`] without a new member, and
//! at most [`Rules::max_open`] groups stay open (beyond it the one quiet longest closes), so
//! memory is bounded: `max_open` × the embedding's length floats. Closed groups keep their
//! members; only open ones take new posts.
//!
//! This is plain arithmetic over vectors: the store persists what [`Grouper::assign`]
//! decides, and reloads the open groups at start ([`Grouper::reopen`]).

use chrono::{DateTime, Utc};

/// How posts are grouped (`desk.group_similarity`, `desk.group_quiet`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// The least cosine between a post and a group's centroid for the post to join it.
    pub similarity: f32,
    /// A group with no new member for this long takes no more.
    pub quiet: chrono::Duration,
    /// Groups open at once, at most.
    pub max_open: usize,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            similarity: DEFAULT_SIMILARITY,
            quiet: chrono::Duration::hours(2),
            max_open: 4096,
        }
    }
}

/// `desk.group_similarity`'s default, measured on a labelled paraphrase set (docs/desk.md).
pub const DEFAULT_SIMILARITY: f32 = 0.75;

/// An open group as the grouper keeps it.
#[derive(Debug, Clone)]
pub struct Open {
    pub id: i64,
    /// The members' vectors summed.
    pub sum: Vec<f32>,
    pub size: u32,
    pub last_at: DateTime<Utc>,
}

impl Open {
    /// The cosine between `v` (unit length) and the centroid.
    fn similarity(&self, v: &[f32]) -> f32 {
        let norm = self
            .sum
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            .sqrt()
            .max(1e-12);
        self.sum.iter().zip(v).map(|(a, b)| a * b).sum::<f32>() / norm
    }
}

/// Where [`Grouper::assign`] put a post.
#[derive(Debug, Clone, PartialEq)]
pub enum Placed {
    /// Joined this open group, at this cosine to its centroid.
    Joined { group: i64, similarity: f32 },
    /// Opens a new group (the store gives it its id: [`Grouper::opened`]).
    New,
}

/// The open groups, in memory.
#[derive(Debug, Default)]
pub struct Grouper {
    pub rules: Rules,
    open: Vec<Open>,
}

impl Grouper {
    pub fn new(rules: Rules) -> Grouper {
        Grouper {
            rules,
            open: Vec::new(),
        }
    }

    /// Takes back groups the store kept open (a restart).
    pub fn reopen(&mut self, groups: Vec<Open>) {
        self.open = groups;
        self.open.sort_by_key(|g| g.last_at);
        let excess = self.open.len().saturating_sub(self.rules.max_open);
        self.open.drain(..excess);
    }

    pub fn open_groups(&self) -> usize {
        self.open.len()
    }

    /// Closes groups quiet since before `now − quiet`, and the quietest beyond `max_open`
    /// (one slot is kept for a new group); their ids, for the store to mark closed.
    pub fn close_quiet(&mut self, now: DateTime<Utc>) -> Vec<i64> {
        let cutoff = now - self.rules.quiet;
        let mut closed: Vec<i64> = Vec::new();
        self.open.retain(|g| {
            let keep = g.last_at >= cutoff;
            if !keep {
                closed.push(g.id);
            }
            keep
        });
        if self.open.len() >= self.rules.max_open {
            self.open.sort_by_key(|g| g.last_at);
            let n = self.open.len() + 1 - self.rules.max_open;
            closed.extend(self.open.drain(..n).map(|g| g.id));
        }
        closed
    }

    /// The open group `v` (unit length) joins, or [`Placed::New`]. A join updates the
    /// group's centroid and time here; a new group is added by [`Grouper::opened`].
    pub fn assign(&mut self, v: &[f32], now: DateTime<Utc>) -> Placed {
        let best = self
            .open
            .iter_mut()
            .filter(|g| g.sum.len() == v.len())
            .map(|g| {
                let s = g.similarity(v);
                (g, s)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((g, s)) if s >= self.rules.similarity => {
                for (a, b) in g.sum.iter_mut().zip(v) {
                    *a += b;
                }
                g.size += 1;
                g.last_at = g.last_at.max(now);
                Placed::Joined {
                    group: g.id,
                    similarity: s,
                }
            }
            _ => Placed::New,
        }
    }

    /// A new group the store created for `v`.
    pub fn opened(&mut self, id: i64, v: &[f32], now: DateTime<Utc>) {
        self.open.push(Open {
            id,
            sum: v.to_vec(),
            size: 1,
            last_at: now,
        });
    }

    /// The open group `id`, if it is open.
    pub fn get(&self, id: i64) -> Option<&Open> {
        self.open.iter().find(|g| g.id == id)
    }
}

/// A vector as SQLite keeps it: f32 little-endian.
pub fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A vector back from its blob (`None` when the length is no multiple of 4).
pub fn from_blob(b: &[u8]) -> Option<Vec<f32>> {
    b.len().is_multiple_of(4).then(|| {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

/// The cosine of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn near_posts_join_far_ones_open_groups_and_quiet_groups_close() {
        let t0 = Utc::now();
        let mut g = Grouper::new(Rules {
            similarity: 0.9,
            quiet: chrono::Duration::minutes(30),
            max_open: 2,
        });
        let a = unit(&[1.0, 0.0, 0.0]);
        assert_eq!(g.assign(&a, t0), Placed::New);
        g.opened(1, &a, t0);
        let near = unit(&[1.0, 0.1, 0.0]);
        assert!(
            matches!(g.assign(&near, t0), Placed::Joined { group: 1, similarity } if similarity > 0.99)
        );
        assert_eq!(g.get(1).unwrap().size, 2);
        let far = unit(&[0.0, 1.0, 0.0]);
        assert_eq!(g.assign(&far, t0), Placed::New);
        g.opened(2, &far, t0 + chrono::Duration::minutes(1));
        // A third group: the quietest of the two goes (max_open 2, one slot kept).
        let closed = g.close_quiet(t0 + chrono::Duration::minutes(2));
        assert_eq!(closed, vec![1]);
        g.opened(
            3,
            &unit(&[0.0, 0.0, 1.0]),
            t0 + chrono::Duration::minutes(2),
        );
        // Quiet for longer than 30 minutes: closed, and a post like it opens a new group.
        let later = t0 + chrono::Duration::minutes(40);
        let mut closed = g.close_quiet(later);
        closed.sort();
        assert_eq!(closed, vec![2, 3]);
        assert_eq!(g.assign(&far, later), Placed::New);
        assert_eq!(g.open_groups(), 0);
    }

    #[test]
    fn blobs_round_trip() {
        let v = vec![0.5f32, -1.25, 3.0e-8];
        assert_eq!(from_blob(&to_blob(&v)).unwrap(), v);
        assert!(from_blob(&[1, 2, 3]).is_none());
    }
}
