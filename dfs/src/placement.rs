//! Rack-aware replica placement, HDFS's default policy:
//!
//! - replica 1 on the writer's node if it is a datanode, else a random one;
//! - replica 2 on another rack;
//! - replica 3 on replica 2's rack, another node (on replica 1's rack is
//!   never chosen while another rack is open);
//! - further replicas random;
//! - never two replicas on one node, and at most `(r − 1) / racks + 2`
//!   replicas on one rack.
//!
//! The same function chooses extra targets for re-replication, given the
//! replicas that already exist. The chosen nodes are then ordered into a
//! pipeline by network distance: each next hop is the nearest node to the
//! previous one, starting from the writer.

use std::collections::{HashMap, HashSet};

use rand::seq::SliceRandom;
use rand::Rng;

/// A datanode that could take a replica.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub id: String,
    pub host: String,
    pub rack: String,
    pub remaining: u64,
    pub load: u32,
}

/// A preference among candidates.
type Pref = Box<dyn Fn(&Candidate) -> bool>;

/// Network distance as HDFS's topology counts it: same node 0, same rack 2,
/// another rack 4.
pub fn distance(a_host: &str, a_rack: &str, b_host: &str, b_rack: &str) -> u32 {
    if a_host == b_host && a_rack == b_rack {
        0
    } else if a_rack == b_rack {
        2
    } else {
        4
    }
}

/// HDFS's cap on replicas per rack.
pub fn max_per_rack(total: usize, racks: usize) -> usize {
    if racks <= 1 || total <= 1 {
        return total.max(1);
    }
    let m = (total - 1) / racks + 2;
    if m == total {
        m - 1
    } else {
        m
    }
}

/// Chooses `wanted` more nodes for a block of `block_size` bytes, given the
/// nodes that already hold it (`existing`, by id) and the writer's host.
/// Returns fewer when the cluster cannot do better under the rules; the
/// caller decides whether that is enough.
pub fn choose_targets<R: Rng>(
    rng: &mut R,
    nodes: &[Candidate],
    existing: &[&Candidate],
    writer_host: Option<&str>,
    wanted: usize,
    block_size: u64,
    excluded: &HashSet<String>,
) -> Vec<Candidate> {
    let racks: HashSet<&str> = nodes.iter().map(|n| n.rack.as_str()).collect();
    let total = (existing.len() + wanted).min(nodes.len());
    let cap = max_per_rack(total, racks.len());
    let avg_load = if nodes.is_empty() {
        0.0
    } else {
        nodes.iter().map(|n| n.load as f64).sum::<f64>() / nodes.len() as f64
    };
    let mut chosen: Vec<Candidate> = existing.iter().map(|c| (*c).clone()).collect();
    let mut out = Vec::new();
    let fits = |n: &Candidate, chosen: &[Candidate], strict_load: bool| {
        if excluded.contains(&n.id) || chosen.iter().any(|c| c.id == n.id) {
            return false;
        }
        if n.remaining < block_size {
            return false;
        }
        if strict_load && avg_load > 0.0 && n.load as f64 > 2.0 * avg_load {
            return false;
        }
        chosen.iter().filter(|c| c.rack == n.rack).count() < cap
    };
    for _ in 0..wanted {
        // Preference, in order; each is tried with the load filter, then
        // without it.
        let prefs: Vec<Pref> = match chosen.len() {
            0 => {
                let w = writer_host.map(str::to_string);
                vec![
                    Box::new(move |n: &Candidate| w.as_deref() == Some(n.host.as_str())),
                    Box::new(|_: &Candidate| true),
                ]
            }
            1 => {
                let r0 = chosen[0].rack.clone();
                vec![
                    Box::new(move |n: &Candidate| n.rack != r0),
                    Box::new(|_: &Candidate| true),
                ]
            }
            2 => {
                let (r0, r1) = (chosen[0].rack.clone(), chosen[1].rack.clone());
                if r0 == r1 {
                    vec![
                        Box::new(move |n: &Candidate| n.rack != r0),
                        Box::new(|_: &Candidate| true),
                    ]
                } else {
                    vec![
                        Box::new(move |n: &Candidate| n.rack == r1),
                        Box::new(|_: &Candidate| true),
                    ]
                }
            }
            _ => {
                // Still on one rack (re-replication of a badly placed
                // block): spread first.
                let used: HashSet<String> = chosen.iter().map(|c| c.rack.clone()).collect();
                if used.len() == 1 {
                    vec![
                        Box::new(move |n: &Candidate| !used.contains(&n.rack)),
                        Box::new(|_: &Candidate| true),
                    ]
                } else {
                    vec![Box::new(|_: &Candidate| true)]
                }
            }
        };
        let mut picked = None;
        'outer: for pref in &prefs {
            for strict in [true, false] {
                let pool: Vec<&Candidate> = nodes
                    .iter()
                    .filter(|n| pref(n) && fits(n, &chosen, strict))
                    .collect();
                if let Some(n) = pool.choose(rng) {
                    picked = Some((*n).clone());
                    break 'outer;
                }
            }
        }
        match picked {
            Some(n) => {
                chosen.push(n.clone());
                out.push(n);
            }
            None => break,
        }
    }
    out
}

/// Orders `nodes` into a pipeline: starting from the writer (or the first
/// node when the writer is not in the cluster), each next hop is the
/// nearest remaining node to the last one.
pub fn pipeline_order(
    nodes: Vec<Candidate>,
    writer_host: Option<&str>,
    rack_of_host: &HashMap<String, String>,
) -> Vec<Candidate> {
    let mut rest = nodes;
    let mut out = Vec::with_capacity(rest.len());
    let (mut host, mut rack) = match writer_host {
        Some(h) => (
            h.to_string(),
            rack_of_host.get(h).cloned().unwrap_or_default(),
        ),
        None => match rest.first() {
            Some(n) => (n.host.clone(), n.rack.clone()),
            None => return out,
        },
    };
    while !rest.is_empty() {
        let (i, _) = rest
            .iter()
            .enumerate()
            .min_by_key(|(_, n)| distance(&host, &rack, &n.host, &n.rack))
            .expect("not empty");
        let n = rest.remove(i);
        host = n.host.clone();
        rack = n.rack.clone();
        out.push(n);
    }
    out
}

/// Sorts replicas for a reader, nearest first by `distance_to_reader`
/// (see [`distance`]: same node, then same rack, then the rest), shuffled
/// within each group to spread the load.
pub fn sort_for_reader<R: Rng, T>(
    rng: &mut R,
    replicas: &mut [T],
    distance_to_reader: impl Fn(&T) -> u32,
) {
    replicas.shuffle(rng);
    replicas.sort_by_key(distance_to_reader);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cluster(racks: &[(&str, usize)]) -> Vec<Candidate> {
        let mut out = Vec::new();
        for (rack, n) in racks {
            for i in 0..*n {
                out.push(Candidate {
                    id: format!("{rack}-dn{i}"),
                    host: format!("{rack}-host{i}"),
                    rack: rack.to_string(),
                    remaining: 1 << 40,
                    load: 0,
                });
            }
        }
        out
    }

    fn racks_of(v: &[Candidate]) -> Vec<&str> {
        v.iter().map(|c| c.rack.as_str()).collect()
    }

    #[test]
    fn three_replicas_follow_the_default_policy() {
        let nodes = cluster(&[("/r1", 3), ("/r2", 3)]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let none = HashSet::new();
        for _ in 0..500 {
            let t = choose_targets(&mut rng, &nodes, &[], Some("/r1-host1"), 3, 1024, &none);
            assert_eq!(t.len(), 3);
            assert_eq!(t[0].id, "/r1-dn1", "writer-local first");
            assert_ne!(t[1].rack, t[0].rack, "second on another rack");
            assert_eq!(t[2].rack, t[1].rack, "third on the second's rack");
            let ids: HashSet<_> = t.iter().map(|c| &c.id).collect();
            assert_eq!(ids.len(), 3, "never two on one node");
        }
        // A writer outside the cluster: any first node, same shape after.
        for _ in 0..200 {
            let t = choose_targets(&mut rng, &nodes, &[], Some("elsewhere"), 3, 1024, &none);
            let r = racks_of(&t);
            assert!(r[0] != r[1] && r[1] == r[2]);
        }
    }

    #[test]
    fn the_per_rack_cap_holds_for_any_replication() {
        let nodes = cluster(&[("/r1", 4), ("/r2", 4)]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let none = HashSet::new();
        for r in 1..=8 {
            for _ in 0..100 {
                let t = choose_targets(&mut rng, &nodes, &[], None, r, 1, &none);
                assert_eq!(t.len(), r);
                let cap = max_per_rack(r, 2);
                for rack in ["/r1", "/r2"] {
                    assert!(racks_of(&t).iter().filter(|x| **x == rack).count() <= cap);
                }
                if r >= 2 {
                    assert!(t.iter().any(|c| c.rack != t[0].rack), "at least two racks");
                }
            }
        }
        assert_eq!(max_per_rack(3, 2), 2);
        assert_eq!(max_per_rack(3, 1), 3);
        assert_eq!(max_per_rack(2, 2), 1);
    }

    #[test]
    fn re_replication_spreads_and_skips_bad_nodes() {
        let nodes = cluster(&[("/r1", 3), ("/r2", 3)]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let none = HashSet::new();
        // Two replicas left on one rack: the third goes to the other rack.
        let a = &nodes[0];
        let b = &nodes[1];
        for _ in 0..100 {
            let t = choose_targets(&mut rng, &nodes, &[a, b], None, 1, 1, &none);
            assert_eq!(t[0].rack, "/r2");
        }
        // Excluded, full and overloaded nodes are avoided.
        let mut busy = nodes.clone();
        busy[3].remaining = 0;
        busy[4].load = 100;
        let excluded: HashSet<String> = [busy[5].id.clone()].into();
        for _ in 0..100 {
            let t = choose_targets(&mut rng, &busy, &[a], None, 1, 10, &excluded);
            // Only /r2-dn1 is a good node on the remote rack; it has load
            // 100, so the load rule falls back rather than giving up.
            assert_eq!(t.len(), 1);
            assert_eq!(t[0].id, "/r2-dn1");
        }
        // Not enough nodes: as many as the rules allow.
        let small = cluster(&[("/r1", 2)]);
        let t = choose_targets(&mut rng, &small, &[], None, 3, 1, &none);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn pipelines_and_reads_go_nearest_first() {
        let nodes = cluster(&[("/r1", 3), ("/r2", 3)]);
        let racks: HashMap<String, String> = nodes
            .iter()
            .map(|n| (n.host.clone(), n.rack.clone()))
            .collect();
        let picked = vec![nodes[4].clone(), nodes[0].clone(), nodes[3].clone()];
        let p = pipeline_order(picked, Some("/r1-host2"), &racks);
        assert_eq!(racks_of(&p), vec!["/r1", "/r2", "/r2"]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut replicas = vec![nodes[4].clone(), nodes[1].clone(), nodes[0].clone()];
        sort_for_reader(&mut rng, &mut replicas, |c| {
            distance("/r1-host0", "/r1", &c.host, &c.rack)
        });
        assert_eq!(replicas[0].id, "/r1-dn0");
        assert_eq!(replicas[1].id, "/r1-dn1");
        assert_eq!(replicas[2].id, "/r2-dn1");
    }
}
