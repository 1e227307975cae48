//! The social graph of the mix: an edge list of friendships, renumbered and deduplicated.

use anyhow::{Context as _, bail};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// The Reed College Facebook graph (962 users, 18 812 friendships) shipped with this crate;
/// see data/README.md for its source and citation.
pub(super) const DEFAULT_GRAPH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/socfb-Reed98.edges");

/// An undirected friendship graph with nodes renumbered 0..nodes.
pub(super) struct Graph {
    pub(super) nodes: usize,
    pub(super) edges: Vec<(usize, usize)>,
}

impl Graph {
    pub(super) fn load(path: &Path) -> anyhow::Result<(Self, PathBuf)> {
        let path = locate(path)?;
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let graph = Self::parse(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok((graph, path))
    }

    /// Whitespace-separated pairs of node numbers, whatever their base (0 or 1) or gaps;
    /// further columns (weights, times) are ignored, as are self-loops and repeats of a
    /// friendship in either direction.
    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut pairs = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('%') || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace().map(str::parse::<u64>);
            match (fields.next(), fields.next()) {
                (Some(Ok(a)), Some(Ok(b))) => pairs.push((a, b)),
                _ => bail!("line {}: expected two node numbers, got {line:?}", n + 1),
            }
        }
        let labels: BTreeSet<u64> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
        let index: BTreeMap<u64, usize> = labels.iter().enumerate().map(|(i, &label)| (label, i)).collect();
        let mut seen = HashSet::new();
        let mut edges = Vec::new();
        for (a, b) in pairs {
            let (a, b) = (index[&a], index[&b]);
            if a != b && seen.insert((a.min(b), a.max(b))) {
                edges.push((a, b));
            }
        }
        if edges.is_empty() {
            bail!("no friendships in the file");
        }
        Ok(Self { nodes: labels.len(), edges })
    }
}

/// The graph file as given, or, for a relative path missing from the current directory,
/// the same path from the repository root this binary was built in.
fn locate(path: &Path) -> anyhow::Result<PathBuf> {
    if path.exists() || path.is_absolute() {
        return Ok(path.to_owned());
    }
    let from_repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path);
    if from_repo.exists() {
        return Ok(from_repo);
    }
    bail!("graph file {} not found (from the current directory or the repository root); pass --graph", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphs_are_renumbered_deduplicated_and_comments_skipped() {
        let g = Graph::parse("% comment\n# another\n1 2\n2 1\n2 3 0.5\n\n3 3\n5 1\n").unwrap();
        assert_eq!(g.nodes, 4);
        assert_eq!(g.edges, vec![(0, 1), (1, 2), (3, 0)]);
        assert!(Graph::parse("1 x\n").is_err());
        assert!(Graph::parse("% nothing\n").is_err());
    }

    #[test]
    fn the_shipped_graph_is_reed98() {
        let (g, _) = Graph::load(Path::new(DEFAULT_GRAPH)).unwrap();
        assert_eq!((g.nodes, g.edges.len()), (962, 18_812));
    }
}
