//! Leases: which service replicates a protection. One lease object per
//! replication unit (a consistency group, or a protection alone) and per
//! owner (the configuration's lineage, so two configurations sharing a
//! vault never contend): `leases/<id>`, `id` a keyed hash of the owner and
//! the unit, so names say nothing of either. Each `replicate --watch`
//! service also keeps a heartbeat, `services/<owner id>/<service id>`, by
//! which services count each other to share the work fairly.
//!
//! A lease is taken with create-if-absent, renewed every `renew_every` with
//! update-if-etag-matches on the version last written, and deleted by its
//! holder on a clean exit. As with vault locks (`lock.rs`), no wall clock
//! decides anything: another service takes a lease for dead only when it
//! has itself watched the lease's bytes stay the same for `expire_after`
//! (the longer of its own setting and the holder's, which the lease
//! records) on its own monotonic clock, or when the holder ran on this very
//! kernel and its pid is gone. It then replaces the lease by
//! compare-and-swap on the version it read, so of two services taking over
//! at once exactly one wins. A holder that was only slow fails its next
//! renewal and, since a writer confirms its lease right before it writes a
//! point's manifests ([`Leases::confirm`]), commits no point.
//!
//! Plain JSON, not sealed: a lease holds no data, only who holds it.

use super::lock::{epoch_secs, kernel_id, pid_gone_here};
use super::{Vault, VaultError};
use crate::store::{Store, StoreError, UpdateVersion};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Default renewal interval of a lease and a heartbeat.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
/// Default expiry: a lease seen unchanged this long is dead (3 renewals).
pub const EXPIRE_AFTER: Duration = Duration::from_secs(30);

/// How often leases are renewed and when an unrenewed one is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub renew_every: Duration,
    pub expire_after: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            renew_every: RENEW_EVERY,
            expire_after: EXPIRE_AFTER,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(
        "{unit} is replicated by {holder}; not taking a point beside it (stop that service, or wait for its lease to expire {expire}s after its last renewal)"
    )]
    Held {
        unit: String,
        holder: String,
        expire: u64,
    },
    #[error(
        "the lease on {unit} was lost (another service took it over after seeing no renewal); no point was written"
    )]
    Lost { unit: String },
}

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Random per process run (hex), so a restarted service is a new holder.
    pub service: String,
    pub host: String,
    pub pid: u32,
    /// Kernel boot id and pid namespace: a process on the same ones may
    /// judge the pid directly.
    #[serde(default)]
    pub kernel: String,
}

impl Holder {
    /// This process, as service `service`.
    pub fn this_process(service: &str, host: &str) -> Holder {
        Holder {
            service: service.to_string(),
            host: host.to_string(),
            pid: std::process::id(),
            kernel: kernel_id(),
        }
    }

    /// `host/pid/service`: what a manifest records as its writer.
    pub fn tag(&self) -> String {
        format!("{}/{}/{}", self.host, self.pid, self.service)
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "service {} on {} (pid {})",
            self.service, self.host, self.pid
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Body {
    #[serde(flatten)]
    holder: Holder,
    /// The holder's clock (seconds since the epoch) when it took the
    /// lease and at its last renewal: shown to people, never compared.
    since: u64,
    time: u64,
    /// Renewals so far: each changes the bytes, which observers watch.
    renewals: u64,
    /// The holder's settings, so observers with shorter ones wait long
    /// enough.
    renew_every_ms: u64,
    expire_after_ms: u64,
    /// Heartbeats: the leases the service holds, so services balance.
    #[serde(default)]
    held: u64,
    /// Heartbeats: the service is at its `--max-protections` and takes
    /// nothing more (nobody gives batches back to it).
    #[serde(default)]
    full: bool,
}

/// Another live service, from its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub service: String,
    /// Its `--host` (sites naming another host are not its to take).
    pub host: String,
    /// Batches it holds.
    pub held: u64,
    /// At its `--max-protections`: takes nothing more.
    pub full: bool,
}

/// A lease as read by someone: for `status` and `/metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseView {
    pub unit: String,
    pub service: String,
    pub host: String,
    pub pid: u32,
    /// RFC 3339, the holder's clock: when it took the lease.
    pub since: String,
    /// RFC 3339, the holder's clock: its last renewal.
    pub renewed: String,
    pub renewals: u64,
    /// How long the reader has seen the lease unchanged on its own
    /// monotonic clock (0 at a first look).
    pub unchanged_seconds: f64,
    pub renew_every_seconds: f64,
    pub expire_after_seconds: f64,
    /// Held by the reading process.
    pub mine: bool,
    /// Its holder is a process that runs on this kernel and in this pid
    /// namespace now: alive, whatever its renewals say.
    #[serde(skip)]
    pub alive_here: bool,
}

/// What [`Leases::take`] found.
#[derive(Debug)]
pub enum Taken {
    /// The lease was free; it is ours now.
    Fresh,
    /// Its holder stopped renewing; we replaced it.
    Over(Holder),
    /// Already ours (renewed).
    Ours,
    /// Someone alive holds it.
    Busy(LeaseView),
}

/// A process's leases in one vault, for one owner.
pub struct Leases {
    store: Store,
    rt: &'static tokio::runtime::Runtime,
    url: String,
    key: [u8; 32],
    owner: String,
    me: Holder,
    timing: Timing,
    /// unit -> (body, version, when) last written by us.
    held: Mutex<HashMap<String, (Body, UpdateVersion, Instant)>>,
    /// object name -> (digest of its bytes, since when we see them).
    watched: Mutex<HashMap<String, ([u8; 32], Instant)>>,
    heartbeat: Mutex<Option<(Body, UpdateVersion)>>,
    /// Services whose heartbeat we saw go silent for the expiry: their
    /// leases are dead too (the same thread renews both), without
    /// watching each lease for another expiry.
    dead_services: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("url", &self.url)
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

fn rfc3339(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Leases {
    /// Leases of `vault`'s owner (its lineage; none: the empty owner),
    /// held as `me`.
    pub fn new(vault: &Vault, me: Holder, timing: Timing) -> Leases {
        Leases {
            store: vault.store.clone(),
            rt: vault.rt,
            url: vault.url.clone(),
            key: *vault.id_key(),
            owner: vault.owner().unwrap_or_default(),
            me,
            timing,
            held: Mutex::new(HashMap::new()),
            watched: Mutex::new(HashMap::new()),
            heartbeat: Mutex::new(None),
            dead_services: Mutex::new(Default::default()),
        }
    }

    pub fn me(&self) -> &Holder {
        &self.me
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    fn hash(&self, parts: &[&[u8]]) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        h.finalize().to_hex().to_string()
    }

    /// The object name of `unit`'s lease.
    pub fn name(&self, unit: &str) -> String {
        format!(
            "leases/{}",
            self.hash(&[b"lease", self.owner.as_bytes(), unit.as_bytes()])
        )
    }

    fn services_dir(&self) -> String {
        format!(
            "services/{}",
            self.hash(&[b"services", self.owner.as_bytes()])
        )
    }

    fn err(&self, e: StoreError) -> VaultError {
        VaultError::Open(Box::new(e))
    }

    fn body(&self, since: u64, renewals: u64) -> Body {
        Body {
            holder: self.me.clone(),
            since,
            time: epoch_secs(),
            renewals,
            renew_every_ms: millis(self.timing.renew_every),
            expire_after_ms: millis(self.timing.expire_after),
            held: 0,
            full: false,
        }
    }

    fn read(&self, name: &str) -> Result<Option<(bytes::Bytes, UpdateVersion)>, VaultError> {
        match self.rt.block_on(self.store.get_versioned(name)) {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Write `name` only if absent (`expected` None) or still at
    /// `expected`; None when someone else wrote it first.
    fn put(
        &self,
        name: &str,
        body: &Body,
        expected: Option<&UpdateVersion>,
    ) -> Result<Option<UpdateVersion>, VaultError> {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let r = match expected {
            None => self.rt.block_on(self.store.put_if_absent(name, bytes)),
            Some(v) => self.rt.block_on(self.store.put_if_match(name, bytes, v)),
        };
        match r {
            Ok(v) => Ok(Some(v)),
            Err(
                StoreError::AlreadyExists { .. }
                | StoreError::Changed { .. }
                | StoreError::NotFound { .. },
            ) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// How long these exact bytes of `name` have been seen, on our own
    /// monotonic clock.
    fn observe(&self, name: &str, bytes: &[u8]) -> Duration {
        let digest = *blake3::hash(bytes).as_bytes();
        let mut w = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        match w.get(name) {
            Some((d, t)) if *d == digest => t.elapsed(),
            _ => {
                w.insert(name.to_string(), (digest, Instant::now()));
                Duration::ZERO
            }
        }
    }

    /// Whether a lease (or heartbeat) with `body`, seen unchanged for
    /// `unchanged`, belongs to a holder that stopped renewing.
    fn dead(&self, body: Option<&Body>, unchanged: Duration) -> bool {
        self.silent(body, unchanged)
            || body.is_some_and(|b| {
                self.dead_services
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&b.holder.service)
            })
    }

    /// [`Leases::dead`] by this object's own renewals only.
    fn silent(&self, body: Option<&Body>, unchanged: Duration) -> bool {
        let theirs = body.map_or(Duration::ZERO, |b| Duration::from_millis(b.expire_after_ms));
        unchanged >= self.timing.expire_after.max(theirs)
            || body.is_some_and(|b| pid_gone_here(&b.holder.kernel, b.holder.pid, &kernel_id()))
    }

    fn view(&self, unit: &str, body: &Body, unchanged: Duration) -> LeaseView {
        LeaseView {
            unit: unit.to_string(),
            service: body.holder.service.clone(),
            host: body.holder.host.clone(),
            pid: body.holder.pid,
            since: rfc3339(body.since),
            renewed: rfc3339(body.time),
            renewals: body.renewals,
            unchanged_seconds: unchanged.as_secs_f64(),
            renew_every_seconds: body.renew_every_ms as f64 / 1000.0,
            expire_after_seconds: body.expire_after_ms as f64 / 1000.0,
            mine: body.holder == self.me,
            alive_here: {
                let here = kernel_id();
                !here.is_empty()
                    && body.holder.kernel == here
                    && body.holder.pid != 0
                    && !pid_gone_here(&body.holder.kernel, body.holder.pid, &here)
            },
        }
    }

    /// Take `unit`'s lease if it is free or dead (see the module doc);
    /// renew it if it is ours already.
    pub fn take(&self, unit: &str) -> Result<Taken, VaultError> {
        if self.holds(unit) {
            return Ok(if self.renew(unit)? {
                Taken::Ours
            } else {
                self.take(unit)?
            });
        }
        let name = self.name(unit);
        // Create first (one request when free, the usual case).
        let body = self.body(epoch_secs(), 0);
        if let Some(v) = self.put(&name, &body, None)? {
            self.hold(unit, body, v);
            return Ok(Taken::Fresh);
        }
        match self.read(&name)? {
            // Released between the two requests: next round.
            None => Ok(Taken::Busy(self.view(
                unit,
                &self.body(0, 0),
                Duration::ZERO,
            ))),
            Some((bytes, version)) => {
                let unchanged = self.observe(&name, &bytes);
                let old = serde_json::from_slice::<Body>(&bytes).ok();
                if !self.dead(old.as_ref(), unchanged) {
                    return Ok(self.busy(unit, &name, &bytes));
                }
                let body = self.body(epoch_secs(), 0);
                match self.put(&name, &body, Some(&version))? {
                    Some(v) => {
                        self.hold(unit, body, v);
                        let who = old.map(|b| b.holder).unwrap_or_else(|| Holder {
                            service: "(unreadable lease)".into(),
                            host: String::new(),
                            pid: 0,
                            kernel: String::new(),
                        });
                        tracing::warn!(
                            "vault {}: {unit}: lease of {who} unchanged for {}s as seen here; taken over",
                            self.url,
                            unchanged.as_secs()
                        );
                        Ok(Taken::Over(who))
                    }
                    None => Ok(match self.read(&name)? {
                        Some((bytes, _)) => self.busy(unit, &name, &bytes),
                        None => Taken::Busy(self.view(unit, &self.body(0, 0), Duration::ZERO)),
                    }),
                }
            }
        }
    }

    fn busy(&self, unit: &str, name: &str, bytes: &[u8]) -> Taken {
        let unchanged = self.observe(name, bytes);
        match serde_json::from_slice::<Body>(bytes) {
            Ok(b) => Taken::Busy(self.view(unit, &b, unchanged)),
            Err(_) => {
                let mut b = self.body(0, 0);
                b.holder.service = "(unreadable lease)".into();
                b.holder.host = String::new();
                b.holder.pid = 0;
                Taken::Busy(self.view(unit, &b, unchanged))
            }
        }
    }

    fn hold(&self, unit: &str, body: Body, v: UpdateVersion) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(unit.to_string(), (body, v, Instant::now()));
    }

    /// Whether this process holds `unit`'s lease (as far as it knows: a
    /// renewal or [`Leases::confirm`] proves it).
    pub fn holds(&self, unit: &str) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(unit)
    }

    /// The units whose leases this process holds, sorted.
    pub fn held(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Renew `unit`'s lease by compare-and-swap on the version last
    /// written. Ok(false): it is not ours (any more); forgotten here.
    pub fn renew(&self, unit: &str) -> Result<bool, VaultError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let Some((body, version, _)) = held.get(unit).cloned() else {
            return Ok(false);
        };
        let mut next = body.clone();
        next.renewals += 1;
        next.time = epoch_secs();
        match self.put(&self.name(unit), &next, Some(&version))? {
            Some(v) => {
                held.insert(unit.to_string(), (next, v, Instant::now()));
                Ok(true)
            }
            None => {
                held.remove(unit);
                tracing::warn!("vault {}: {unit}: lease lost to another service", self.url);
                Ok(false)
            }
        }
    }

    /// Prove `unit`'s lease still holds before committing a point (one
    /// conditional write). Err([`LeaseError::Lost`]) when another service
    /// took it over.
    pub fn confirm(&self, unit: &str) -> Result<(), LeaseError> {
        if self.renew(unit)? {
            Ok(())
        } else {
            Err(LeaseError::Lost {
                unit: unit.to_string(),
            })
        }
    }

    /// Give `unit`'s lease back: deleted while it is provably ours. No
    /// one may take it for dead before watching our last write unchanged
    /// for the expiry; within half of that since our last write (a
    /// confirm just before) it is deleted at once, else renewed first.
    pub fn release(&self, unit: &str) -> Result<(), VaultError> {
        let fresh = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(unit)
            .is_some_and(|(_, _, at)| at.elapsed() < self.timing.expire_after / 2);
        if fresh || self.renew(unit)? {
            self.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(unit);
            let name = self.name(unit);
            match self.rt.block_on(self.store.delete(&name)) {
                Ok(()) => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        Ok(())
    }

    /// Release every lease held, and the heartbeat (a clean exit).
    pub fn release_all(&self) {
        for unit in self.held() {
            if let Err(e) = self.release(&unit) {
                tracing::warn!(
                    "vault {}: cannot release the lease on {unit}: {e}",
                    self.url
                );
            }
        }
        let hb = self
            .heartbeat
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if hb.is_some() {
            let name = format!("{}/{}", self.services_dir(), self.me.service);
            let _ = self.rt.block_on(self.store.delete(&name));
        }
    }

    /// Read `unit`'s lease, whoever holds it.
    pub fn look(&self, unit: &str) -> Result<Option<LeaseView>, VaultError> {
        let name = self.name(unit);
        let Some((bytes, _)) = self.read(&name)? else {
            return Ok(None);
        };
        let unchanged = self.observe(&name, &bytes);
        Ok(serde_json::from_slice::<Body>(&bytes)
            .ok()
            .map(|b| self.view(unit, &b, unchanged)))
    }

    /// Write this service's heartbeat (created, or renewed by
    /// compare-and-swap; recreated when someone took it for dead).
    pub fn beat(&self, held: usize, full: bool) -> Result<(), VaultError> {
        let name = format!("{}/{}", self.services_dir(), self.me.service);
        let mut hb = self.heartbeat.lock().unwrap_or_else(|p| p.into_inner());
        let (body, expected) = match hb.take() {
            Some((b, v)) => {
                let mut b = b;
                b.renewals += 1;
                b.time = epoch_secs();
                b.held = held as u64;
                b.full = full;
                (b, Some(v))
            }
            None => {
                let mut b = self.body(epoch_secs(), 0);
                b.held = held as u64;
                b.full = full;
                (b, None)
            }
        };
        match self.put(&name, &body, expected.as_ref())? {
            Some(v) => *hb = Some((body, v)),
            None => {
                // Removed as dead, or a leftover of ours: write it afresh.
                let _ = self.rt.block_on(self.store.delete(&name));
                let mut body = self.body(epoch_secs(), 0);
                body.held = held as u64;
                body.full = full;
                if let Some(v) = self.put(&name, &body, None)? {
                    *hb = Some((body, v));
                }
            }
        }
        Ok(())
    }

    /// The other live services of this owner by their heartbeats, as
    /// (service id, leases it holds, as it last said). Heartbeats seen
    /// unchanged past their expiry are deleted.
    pub fn others(&self, vault: &Vault) -> Result<Vec<Peer>, VaultError> {
        let dir = self.services_dir();
        let names: Vec<String> = vault.list(&dir)?.into_iter().map(|(n, _)| n).collect();
        {
            let mut w = self.watched.lock().unwrap_or_else(|p| p.into_inner());
            w.retain(|n, _| !n.starts_with(&dir) || names.contains(n));
        }
        let mut live = Vec::new();
        for name in &names {
            let Some((bytes, version)) = self.read(name)? else {
                continue;
            };
            let body = serde_json::from_slice::<Body>(&bytes).ok();
            if body.as_ref().is_some_and(|b| b.holder == self.me) {
                continue;
            }
            let unchanged = self.observe(name, &bytes);
            if self.silent(body.as_ref(), unchanged) {
                if let Some(b) = &body {
                    self.dead_services
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(b.holder.service.clone());
                }
                // Only the bytes we judged: a heartbeat renewed meanwhile stays.
                let mut tomb = self.body(0, 0);
                tomb.holder.service = "(expired)".into();
                if self.put(name, &tomb, Some(&version))?.is_some() {
                    let _ = self.rt.block_on(self.store.delete(name));
                }
                continue;
            }
            if let Some(b) = body {
                // Back (it was only slow): its leases are judged by their own renewals again.
                self.dead_services
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&b.holder.service);
                live.push(Peer {
                    service: b.holder.service,
                    host: b.holder.host,
                    held: b.held,
                    full: b.full,
                });
            }
        }
        Ok(live)
    }
}

/// A lease held for the length of one command (`replicate` without
/// `--watch`, `apply`'s first points), renewed in the background and
/// released on drop.
pub struct Guard {
    leases: Arc<Leases>,
    unit: String,
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

impl Guard {
    /// Take `unit`'s lease for this command, or refuse naming its holder.
    /// A holder on another host may be dead: its lease is watched (on this
    /// process's monotonic clock) until it is renewed (refused then) or
    /// stays unchanged for its expiry (taken over), so a one-shot command
    /// can take over from a service whose host is gone. A holder alive on
    /// this host is refused at once.
    pub fn take(leases: Arc<Leases>, unit: &str) -> Result<Guard, LeaseError> {
        let started = Instant::now();
        let mut first: Option<(u64, String)> = None;
        loop {
            let v = match leases.take(unit)? {
                Taken::Fresh | Taken::Over(_) | Taken::Ours => break,
                Taken::Busy(v) => v,
            };
            let expire = v
                .expire_after_seconds
                .max(leases.timing.expire_after.as_secs_f64());
            // Past the expiry plus a renewal without a takeover: the store
            // or the holder behaves oddly; refuse rather than wait on.
            let waited_out = started.elapsed().as_secs_f64() > expire + v.renew_every_seconds + 5.0;
            if v.mine && !waited_out {
                // Released between our create and read: try again.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let renewed = first
                .as_ref()
                .is_some_and(|f| *f != (v.renewals, v.renewed.clone()));
            first.get_or_insert((v.renewals, v.renewed.clone()));
            if v.alive_here || renewed || waited_out {
                return Err(LeaseError::Held {
                    unit: unit.to_string(),
                    holder: format!(
                        "service {} on {} (pid {}, lease taken {}, renewed {} times{})",
                        v.service,
                        v.host,
                        v.pid,
                        v.since,
                        v.renewals,
                        if renewed {
                            ", renewed while this command watched it"
                        } else if v.alive_here {
                            ", running on this host"
                        } else {
                            ""
                        }
                    ),
                    expire: expire as u64,
                });
            }
            if first.as_ref().is_some_and(|f| f.1 == v.renewed) && v.unchanged_seconds == 0.0 {
                tracing::info!(
                    "{unit}: leased by service {} on {} (pid {}); watching whether it still renews (up to {expire:.0}s)",
                    v.service,
                    v.host,
                    v.pid
                );
            }
            std::thread::sleep(Duration::from_secs(1).min(leases.timing.renew_every));
        }
        let (tx, rx) = mpsc::channel::<()>();
        let l = Arc::clone(&leases);
        let u = unit.to_string();
        let every = leases.timing.renew_every;
        let renewer = std::thread::Builder::new()
            .name("lease".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    match l.renew(&u) {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(e) => tracing::warn!("cannot renew the lease on {u}: {e}"),
                    }
                }
            })
            .ok();
        Ok(Guard {
            leases,
            unit: unit.to_string(),
            stop: Some(tx),
            renewer,
        })
    }

    pub fn confirm(&self) -> Result<(), LeaseError> {
        self.leases.confirm(&self.unit)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        if let Err(e) = self.leases.release(&self.unit) {
            tracing::warn!("cannot release the lease on {}: {e}", self.unit);
        }
    }
}

/// The replication unit of a point's targets: `group G` for a consistency
/// group, else the protection address (as `replication::Batch::label`).
pub fn unit(group: Option<&str>, protection: &str) -> String {
    match group {
        Some(g) => format!("group {g}"),
        None => protection.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeySource;

    fn vault(d: &std::path::Path) -> Vault {
        let key = KeySource::File(d.join("vault.key"));
        let url = format!("file://{}", d.join("vault").display());
        Vault::init(&url, &key, d).unwrap().vault
    }

    fn fast() -> Timing {
        Timing {
            renew_every: Duration::from_millis(50),
            expire_after: Duration::from_millis(300),
        }
    }

    fn other(service: &str) -> Holder {
        // Another host: its pid cannot be judged here.
        Holder {
            service: service.into(),
            host: "elsewhere".into(),
            pid: 1,
            kernel: "other-boot/pid:[1]".into(),
        }
    }

    #[test]
    fn one_holder_at_a_time_and_takeover_only_after_observed_silence() {
        let d = tempfile::tempdir().unwrap();
        let v = vault(d.path());
        let a = Leases::new(&v, other("a"), fast());
        let b = Leases::new(&v, other("b"), fast());
        assert!(matches!(a.take("protection.db").unwrap(), Taken::Fresh));
        // b sees a live holder, whatever the holder's clock says.
        let Taken::Busy(view) = b.take("protection.db").unwrap() else {
            panic!("b took a held lease")
        };
        assert_eq!(view.service, "a");
        // a renews: b's observation starts over each time.
        for _ in 0..8 {
            std::thread::sleep(Duration::from_millis(60));
            assert!(a.renew("protection.db").unwrap());
            assert!(matches!(b.take("protection.db").unwrap(), Taken::Busy(_)));
        }
        // a goes silent: after the expiry as seen by b, b takes it over.
        std::thread::sleep(Duration::from_millis(350));
        let Taken::Over(old) = b.take("protection.db").unwrap() else {
            panic!("no takeover")
        };
        assert_eq!(old.service, "a");
        // a was only slow: its confirm fails, so it commits nothing.
        assert!(matches!(
            a.confirm("protection.db"),
            Err(LeaseError::Lost { .. })
        ));
        assert!(!a.holds("protection.db"));
        b.confirm("protection.db").unwrap();
        // Released on a clean exit: free for anyone at once.
        b.release_all();
        assert!(matches!(a.take("protection.db").unwrap(), Taken::Fresh));
    }

    #[test]
    fn two_owners_never_contend_and_a_gone_local_pid_is_dead_at_once() {
        let d = tempfile::tempdir().unwrap();
        let v = vault(d.path());
        v.set_owner(Some("lineage-1".into()));
        let a = Leases::new(&v, other("a"), Timing::default());
        v.set_owner(Some("lineage-2".into()));
        let b = Leases::new(&v, other("b"), Timing::default());
        assert!(matches!(a.take("protection.db").unwrap(), Taken::Fresh));
        assert!(matches!(b.take("protection.db").unwrap(), Taken::Fresh));
        // A holder that ran here and whose pid is gone is dead without waiting.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = Holder {
            service: "gone".into(),
            host: "here".into(),
            pid: child.id(),
            kernel: kernel_id(),
        };
        child.wait().unwrap();
        v.set_owner(Some("lineage-3".into()));
        let g = Leases::new(&v, gone, Timing::default());
        assert!(matches!(g.take("group shop").unwrap(), Taken::Fresh));
        let c = Leases::new(&v, other("c"), Timing::default());
        assert!(matches!(c.take("group shop").unwrap(), Taken::Over(_)));
    }

    #[test]
    fn a_command_refuses_a_held_lease_naming_its_holder_and_heartbeats_count_services() {
        let d = tempfile::tempdir().unwrap();
        let v = vault(d.path());
        let a = Arc::new(Leases::new(&v, other("svc-a"), fast()));
        let g = Guard::take(Arc::clone(&a), "protection.web").unwrap();
        let b = Arc::new(Leases::new(&v, other("svc-b"), fast()));
        let e = Guard::take(Arc::clone(&b), "protection.web").err().unwrap();
        let msg = e.to_string();
        assert!(msg.contains("svc-a") && msg.contains("elsewhere"), "{msg}");
        // The guard renews in the background: still held past the expiry.
        std::thread::sleep(Duration::from_millis(400));
        assert!(matches!(b.take("protection.web").unwrap(), Taken::Busy(_)));
        g.confirm().unwrap();
        drop(g);
        assert!(matches!(b.take("protection.web").unwrap(), Taken::Fresh));

        a.beat(1, false).unwrap();
        b.beat(3, true).unwrap();
        let others = a.others(&v).unwrap();
        assert_eq!(others.len(), 1);
        assert_eq!(
            (others[0].service.as_str(), others[0].held, others[0].full),
            ("svc-b", 3, true)
        );
        // b stops beating: a counts it out once it has seen it silent.
        for _ in 0..8 {
            std::thread::sleep(Duration::from_millis(60));
            a.beat(1, false).unwrap();
            a.others(&v).unwrap();
        }
        assert!(a.others(&v).unwrap().is_empty());
        // b comes back (it was only slow): its heartbeat is written afresh.
        b.beat(0, false).unwrap();
        assert_eq!(a.others(&v).unwrap().len(), 1);
    }

    /// A one-shot command (`Guard`) watches a remote holder's lease: a dead
    /// one (never renewed) is taken over after its expiry; a live one
    /// (renewed while watched) is refused, named; one alive on this host is
    /// refused at once.
    #[test]
    fn a_guard_takes_over_a_dead_remote_lease_and_refuses_a_live_one() {
        let d = tempfile::tempdir().unwrap();
        let v = vault(d.path());
        let dead = Leases::new(&v, other("dead"), fast());
        assert!(matches!(dead.take("protection.db").unwrap(), Taken::Fresh));
        let me = Arc::new(Leases::new(&v, other("one-shot"), fast()));
        let g = Guard::take(Arc::clone(&me), "protection.db").unwrap();
        assert!(me.holds("protection.db"));
        drop(g);

        let live = Arc::new(Leases::new(&v, other("live"), fast()));
        assert!(matches!(live.take("protection.web").unwrap(), Taken::Fresh));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let renewer = {
            let (live, stop) = (Arc::clone(&live), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                    live.renew("protection.web").unwrap();
                }
            })
        };
        let err = Guard::take(Arc::clone(&me), "protection.web")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("service live on elsewhere"), "{err}");
        assert!(
            err.contains("renewed while this command watched it"),
            "{err}"
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        renewer.join().unwrap();

        // Alive here (this very process, another service id): refused at once.
        let here = Leases::new(&v, Holder::this_process("svc", "here"), Timing::default());
        assert!(matches!(here.take("protection.app").unwrap(), Taken::Fresh));
        let t = Instant::now();
        let err = Guard::take(me, "protection.app").err().unwrap().to_string();
        assert!(err.contains("running on this host"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
}
