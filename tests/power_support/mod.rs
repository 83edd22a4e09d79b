//! A file system that honours fsync and can "lose power": a small in-memory
//! FUSE file system (crate `fuser`) where every file and directory keeps two
//! versions, what was written and what was synced. `fsync` of a file makes
//! its data durable, `fsync` of a directory its entries. [`Flaky::power_cut`]
//! throws away everything not synced, as a machine losing power does with
//! its page cache. (Device-mapper's `flakey`/`log-writes` targets are not
//! available in this kernel; this is the layer the test can have.)

#![allow(dead_code)]

use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, MountOption, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Nothing cached in the kernel: after a power cut every lookup asks again.
const TTL: Duration = Duration::ZERO;
const ROOT: u64 = 1;

#[derive(Default)]
struct Node {
    dir: bool,
    perm: u16,
    data: Vec<u8>,
    synced_data: Vec<u8>,
    entries: BTreeMap<OsString, u64>,
    synced_entries: BTreeMap<OsString, u64>,
    mtime: Option<SystemTime>,
}

#[derive(Default)]
struct State {
    nodes: HashMap<u64, Node>,
    next: u64,
    /// fsync calls seen (files, directories).
    syncs: (u64, u64),
}

impl State {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let n = self.nodes.get(&ino)?;
        let t = n.mtime.unwrap_or(SystemTime::UNIX_EPOCH);
        Some(FileAttr {
            ino,
            size: n.data.len() as u64,
            blocks: (n.data.len() as u64).div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: if n.dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: n.perm,
            nlink: if n.dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn add(&mut self, parent: u64, name: &OsStr, dir: bool, perm: u16) -> Result<u64, i32> {
        let p = self.nodes.get(&parent).ok_or(libc::ENOENT)?;
        if !p.dir {
            return Err(libc::ENOTDIR);
        }
        if p.entries.contains_key(name) {
            return Err(libc::EEXIST);
        }
        self.next += 1;
        let ino = self.next;
        self.nodes.insert(
            ino,
            Node {
                dir,
                perm,
                mtime: Some(SystemTime::now()),
                ..Node::default()
            },
        );
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.entries.insert(name.to_os_string(), ino);
        }
        Ok(ino)
    }
}

/// The mounted file system; unmounted when dropped.
pub struct Flaky {
    state: Arc<Mutex<State>>,
    _session: fuser::BackgroundSession,
}

impl Flaky {
    /// Mounts an empty file system at `at` (an existing empty directory).
    pub fn mount(at: &Path) -> Flaky {
        let mut s = State {
            next: ROOT,
            ..State::default()
        };
        s.nodes.insert(
            ROOT,
            Node {
                dir: true,
                perm: 0o755,
                ..Node::default()
            },
        );
        let state = Arc::new(Mutex::new(s));
        let fs = Fs(Arc::clone(&state));
        let session = fuser::spawn_mount2(
            fs,
            at,
            &[MountOption::FSName("standby-flaky".into()), MountOption::RW],
        )
        .expect("mount the FUSE test file system (needs /dev/fuse and root)");
        Flaky {
            state,
            _session: session,
        }
    }

    /// Loses every write not synced: files go back to their synced data,
    /// directories to their synced entries.
    pub fn power_cut(&self) {
        let mut s = self.state.lock().unwrap();
        for n in s.nodes.values_mut() {
            n.data = n.synced_data.clone();
            n.entries = n.synced_entries.clone();
        }
    }

    /// (file fsyncs, directory fsyncs) seen so far.
    pub fn syncs(&self) -> (u64, u64) {
        self.state.lock().unwrap().syncs
    }
}

struct Fs(Arc<Mutex<State>>);

impl Filesystem for Fs {
    fn init(&mut self, _req: &Request<'_>, _config: &mut KernelConfig) -> Result<(), libc::c_int> {
        Ok(())
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let s = self.0.lock().unwrap();
        match s
            .nodes
            .get(&parent)
            .and_then(|p| p.entries.get(name))
            .and_then(|&ino| s.attr(ino))
        {
            Some(a) => reply.entry(&TTL, &a, 0),
            None => reply.error(libc::ENOENT),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.0.lock().unwrap().attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(libc::ENOENT),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut s = self.0.lock().unwrap();
        let Some(n) = s.nodes.get_mut(&ino) else {
            return reply.error(libc::ENOENT);
        };
        if let Some(size) = size {
            n.data.resize(size as usize, 0);
        }
        if let Some(m) = mode {
            n.perm = (m & 0o7777) as u16;
        }
        match mtime {
            Some(TimeOrNow::SpecificTime(t)) => n.mtime = Some(t),
            Some(TimeOrNow::Now) => n.mtime = Some(SystemTime::now()),
            None => {}
        }
        let a = s.attr(ino).expect("node exists");
        reply.attr(&TTL, &a);
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = self.0.lock().unwrap();
        match s.add(parent, name, true, (mode & 0o7777) as u16) {
            Ok(ino) => {
                let a = s.attr(ino).expect("just added");
                reply.entry(&TTL, &a, 0)
            }
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.0.lock().unwrap();
        match s.add(parent, name, false, (mode & 0o7777) as u16) {
            Ok(ino) => {
                let a = s.attr(ino).expect("just added");
                reply.created(&TTL, &a, 0, 0, 0)
            }
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.0.lock().unwrap();
        match s
            .nodes
            .get_mut(&parent)
            .and_then(|p| p.entries.remove(name))
        {
            Some(_) => reply.ok(),
            None => reply.error(libc::ENOENT),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.0.lock().unwrap();
        let Some(&ino) = s.nodes.get(&parent).and_then(|p| p.entries.get(name)) else {
            return reply.error(libc::ENOENT);
        };
        if s.nodes.get(&ino).is_some_and(|n| !n.entries.is_empty()) {
            return reply.error(libc::ENOTEMPTY);
        }
        if let Some(p) = s.nodes.get_mut(&parent) {
            p.entries.remove(name);
        }
        reply.ok()
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let mut s = self.0.lock().unwrap();
        let Some(&ino) = s.nodes.get(&parent).and_then(|p| p.entries.get(name)) else {
            return reply.error(libc::ENOENT);
        };
        if !s.nodes.contains_key(&newparent) {
            return reply.error(libc::ENOENT);
        }
        if flags & libc::RENAME_NOREPLACE != 0 && s.nodes[&newparent].entries.contains_key(newname)
        {
            return reply.error(libc::EEXIST);
        }
        if let Some(p) = s.nodes.get_mut(&parent) {
            p.entries.remove(name);
        }
        if let Some(p) = s.nodes.get_mut(&newparent) {
            p.entries.insert(newname.to_os_string(), ino);
        }
        reply.ok()
    }

    fn link(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut s = self.0.lock().unwrap();
        let Some(p) = s.nodes.get_mut(&newparent) else {
            return reply.error(libc::ENOENT);
        };
        if p.entries.contains_key(newname) {
            return reply.error(libc::EEXIST);
        }
        p.entries.insert(newname.to_os_string(), ino);
        match s.attr(ino) {
            Some(a) => reply.entry(&TTL, &a, 0),
            None => reply.error(libc::ENOENT),
        }
    }

    fn open(&mut self, _req: &Request<'_>, _ino: u64, _flags: i32, reply: ReplyOpen) {
        reply.opened(0, 0)
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let s = self.0.lock().unwrap();
        let Some(n) = s.nodes.get(&ino) else {
            return reply.error(libc::ENOENT);
        };
        let a = (offset.max(0) as usize).min(n.data.len());
        let b = (a + size as usize).min(n.data.len());
        reply.data(&n.data[a..b])
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut s = self.0.lock().unwrap();
        let Some(n) = s.nodes.get_mut(&ino) else {
            return reply.error(libc::ENOENT);
        };
        let a = offset.max(0) as usize;
        if n.data.len() < a + data.len() {
            n.data.resize(a + data.len(), 0);
        }
        n.data[a..a + data.len()].copy_from_slice(data);
        n.mtime = Some(SystemTime::now());
        reply.written(data.len() as u32)
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lo: u64, reply: ReplyEmpty) {
        reply.ok()
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _ds: bool, reply: ReplyEmpty) {
        let mut s = self.0.lock().unwrap();
        s.syncs.0 += 1;
        match s.nodes.get_mut(&ino) {
            Some(n) => {
                n.synced_data = n.data.clone();
                reply.ok()
            }
            None => reply.error(libc::ENOENT),
        }
    }

    fn opendir(&mut self, _req: &Request<'_>, _ino: u64, _flags: i32, reply: ReplyOpen) {
        reply.opened(0, 0)
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let s = self.0.lock().unwrap();
        let Some(n) = s.nodes.get(&ino) else {
            return reply.error(libc::ENOENT);
        };
        let mut all: Vec<(u64, FileType, OsString)> = vec![
            (ino, FileType::Directory, ".".into()),
            (ino, FileType::Directory, "..".into()),
        ];
        for (name, &child) in &n.entries {
            let dir = s.nodes.get(&child).is_some_and(|c| c.dir);
            let kind = if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            all.push((child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(child, (i + 1) as i64, kind, &name) {
                break;
            }
        }
        reply.ok()
    }

    fn releasedir(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _f: i32, reply: ReplyEmpty) {
        reply.ok()
    }

    fn fsyncdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _ds: bool, reply: ReplyEmpty) {
        let mut s = self.0.lock().unwrap();
        s.syncs.1 += 1;
        match s.nodes.get_mut(&ino) {
            Some(n) => {
                n.synced_entries = n.entries.clone();
                reply.ok()
            }
            None => reply.error(libc::ENOENT),
        }
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, 4096, 255, 4096)
    }

    fn access(&mut self, _req: &Request<'_>, _ino: u64, _mask: i32, reply: ReplyEmpty) {
        reply.ok()
    }
}
