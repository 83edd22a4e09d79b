//! Verify: every point's chain resolves, every blob it references is in an
//! index and its pack exists (structure); with `read_data`, every pack is
//! read, its name checked against its content and every indexed blob
//! authenticated. Each problem names the damaged object and the points it
//! affects.

use super::manifest::{self, Manifest, point_name};
use super::{Id, Result, Vault, VaultError, blob_context, index, pack_name};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// The damaged or missing object (`data/ab/…`, `index/…`, `points/…`, `config`).
    pub object: String,
    pub reason: String,
    /// Full ids of the points that cannot be restored because of it.
    pub points: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub points: usize,
    pub packs: usize,
    pub blobs: usize,
    /// Bytes read and authenticated (with `read_data`).
    pub bytes_read: u64,
    /// Packs no index lists (left by an interrupted replication; prune removes them).
    pub unindexed_packs: usize,
    pub problems: Vec<Problem>,
}

/// The object an error is about, and why.
fn describe(e: &VaultError) -> (String, String) {
    match e {
        VaultError::Damaged { object, reason, .. } => (object.clone(), reason.clone()),
        VaultError::Missing { object, .. } => (object.clone(), "it is missing".into()),
        other => (String::new(), other.to_string()),
    }
}

#[derive(Default)]
struct Problems(BTreeMap<String, (String, BTreeSet<String>)>);

impl Problems {
    fn add(&mut self, object: String, reason: String, points: impl IntoIterator<Item = Id>) {
        let e = self
            .0
            .entry(object)
            .or_insert_with(|| (reason, BTreeSet::new()));
        e.1.extend(points.into_iter().map(|p| p.hex()));
    }
}

/// Verify the vault. Holds a shared lock so a concurrent prune cannot make
/// objects vanish mid-check (and be reported as missing).
pub fn verify(vault: &Vault, read_data: bool) -> Result<Report> {
    let _lock = super::lock::Lock::acquire(vault, false, std::time::Duration::from_secs(600))?;
    let mut problems = Problems::default();
    let (idx, bad_index) = index::load(vault, true)?;
    for e in &bad_index {
        let (o, r) = describe(e);
        problems.add(o, r, []);
    }
    let (points, bad_points) = manifest::list_every(vault, true)?;
    let broken_manifests: BTreeSet<String> = bad_points.iter().map(|e| describe(e).0).collect();
    for e in &bad_points {
        let (o, r) = describe(e);
        let id = o.strip_prefix("points/").and_then(Id::parse);
        problems.add(o, r, id);
    }

    // The catalog against the manifests it describes.
    let damaged: BTreeSet<Id> = broken_manifests
        .iter()
        .filter_map(|o| o.strip_prefix("points/").and_then(Id::parse))
        .collect();
    for (object, reason, ids) in super::catalog::check(vault, &points, &damaged) {
        problems.add(object, reason, ids);
    }

    // Which points use which blob; chains that do not resolve.
    let mut users: HashMap<Id, BTreeSet<Id>> = HashMap::new();
    let mut cache: HashMap<Id, Manifest> = points.iter().map(|m| (m.id, m.clone())).collect();
    for m in &points {
        for disk in m.disks.keys() {
            match manifest::resolve(vault, m, disk, &mut cache) {
                Ok(r) => {
                    for b in r.blobs {
                        users.entry(b).or_default().insert(m.id);
                    }
                }
                Err(e) => {
                    let (o, r) = describe(&e);
                    let o = if o.is_empty() { point_name(&m.id) } else { o };
                    let r = if broken_manifests.contains(&o) {
                        "it is damaged".to_string()
                    } else {
                        r
                    };
                    problems.add(o, r, [m.id]);
                }
            }
        }
    }

    let existing: HashMap<String, u64> = vault.list("data")?.into_iter().collect();
    let packs = idx.packs();
    for (blob, pts) in &users {
        match idx.blobs.get(blob) {
            None => problems.add(
                format!("blob {}", blob.hex()),
                "no index lists it (an index object may be damaged)".into(),
                pts.iter().copied(),
            ),
            Some(loc) => {
                let name = pack_name(&loc.pack);
                match existing.get(&name) {
                    None => problems.add(name, "it is missing".into(), pts.iter().copied()),
                    Some(&size) if loc.offset + loc.len as u64 > size => problems.add(
                        name,
                        format!("it is shorter ({size} bytes) than its index says"),
                        pts.iter().copied(),
                    ),
                    Some(_) => {}
                }
            }
        }
    }
    let indexed: BTreeSet<String> = packs.keys().map(pack_name).collect();
    let unindexed_packs = existing.keys().filter(|n| !indexed.contains(*n)).count();

    let mut bytes_read = 0;
    if read_data {
        let names: Vec<(Id, String)> = packs
            .keys()
            .map(|id| (*id, pack_name(id)))
            .filter(|(_, n)| existing.contains_key(n))
            .collect();
        for batch in names.chunks(4) {
            let ns: Vec<String> = batch.iter().map(|(_, n)| n.clone()).collect();
            for ((id, name), got) in batch.iter().zip(vault.get_many(&ns)) {
                let bytes = match got {
                    Ok(b) => b,
                    Err(e) => {
                        let (o, r) = describe(&e);
                        problems.add(o, r, []);
                        continue;
                    }
                };
                bytes_read += bytes.len() as u64;
                let mut affected = BTreeSet::new();
                let mut reasons = Vec::new();
                for &(blob, off, len, _) in &packs[id].blobs {
                    let (a, b) = (off as usize, off as usize + len as usize);
                    let ok = b <= bytes.len()
                        && vault
                            .data_sealer()
                            .open(&bytes[a..b], &blob_context(&blob))
                            .is_ok();
                    if !ok {
                        reasons.push(blob.short());
                        affected.extend(users.get(&blob).into_iter().flatten().copied());
                    }
                }
                let end = packs[id]
                    .blobs
                    .iter()
                    .map(|b| b.1 + b.2 as u64)
                    .max()
                    .unwrap_or(0);
                let content_ok = end == bytes.len() as u64;
                if !reasons.is_empty() {
                    problems.add(
                        name.clone(),
                        if reasons.len() == 1 {
                            format!("blob {} fails authentication", reasons[0])
                        } else {
                            format!("blobs {} fail authentication", reasons.join(", "))
                        },
                        affected,
                    );
                } else if !content_ok {
                    problems.add(
                        name.clone(),
                        format!("it is {} bytes long; its index says {end}", bytes.len()),
                        [],
                    );
                }
            }
        }
    }

    Ok(Report {
        points: points.len() + bad_points.len(),
        packs: existing.len(),
        blobs: idx.blobs.len(),
        bytes_read,
        unindexed_packs,
        problems: problems
            .0
            .into_iter()
            .map(|(object, (reason, points))| Problem {
                object,
                reason,
                points: points.into_iter().collect(),
            })
            .collect(),
    })
}
