//! A site's `host`: the host name or label of the replication services
//! that can reach its disks (a `local` site's files exist on one host).
//! `replicate --watch --host NAME` (default: the host name) takes only
//! batches whose sites name no host or NAME; a site without `host` (a
//! shared file system, a `qemu` site with remote QMP) is reachable from
//! every service.

use super::diag::{Diagnostic, Diagnostics};
use super::reader::Reader;

/// `host` of a site block, when set: a plain name (letters, digits, `.`,
/// `_`, `-`; 1 to 253 characters, as a DNS name), or a diagnostic.
/// Outer None: an error was reported.
pub(super) fn read(r: &mut Reader<'_, '_>, diags: &mut Diagnostics) -> Option<Option<String>> {
    if !r.has("host") {
        return Some(None);
    }
    let loc = r.value_loc("host");
    let h = r.string("host", false, diags)?;
    let plain = !h.is_empty()
        && h.len() <= 253
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !plain {
        if let Some(loc) = loc {
            diags.push(
                Diagnostic::error(
                    "standby::bad_site_host",
                    loc,
                    format!("site host {h:?} is not a host name or label"),
                )
                .label("letters, digits, `.`, `_` and `-` only")
                .help("name the host whose replication services reach this site's disks, as `replicate --watch --host` (default: the host name) says it, e.g. host = \"db-host-1\"; leave `host` out when every service can reach them"),
            );
        }
        return None;
    }
    Some(Some(h))
}
