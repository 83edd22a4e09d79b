//! Keeps secrets out of messages: every error text that may carry something
//! from the environment or a server passes through `redact` first.

/// Environment variables whose values are secrets (object_store's aliases included).
const SECRET_VARS: &[&str] = &[
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_MASTER_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_TOKEN",
    "AZURE_STORAGE_CLIENT_SECRET",
    "AZURE_CLIENT_SECRET",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_TOKEN",
];

/// `msg` with every secret from the environment replaced by `***`, and any
/// SAS signature (`sig=...`) in a URL masked too.
pub fn redact(msg: &str) -> String {
    let mut out = msg.to_string();
    for var in SECRET_VARS {
        let Ok(value) = std::env::var(var) else {
            continue;
        };
        // Whole value, and each part of a SAS token (they travel as query pairs).
        let mut parts = vec![value.clone()];
        parts.extend(value.split('&').map(str::to_string));
        for part in parts {
            let part = part.trim();
            // Very short fragments (e.g. "sv=1") would mangle ordinary text.
            if part.len() >= 8 {
                out = out.replace(part, "***");
            }
        }
    }
    mask_sig(&out)
}

/// Mask the value after each `sig=` (a SAS signature in a URL).
fn mask_sig(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(at) = rest.find("sig=") {
        out.push_str(&rest[..at + 4]);
        rest = &rest[at + 4..];
        let end = rest
            .find(|c: char| c == '&' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(rest.len());
        out.push_str("***");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::mask_sig;

    #[test]
    fn masks_sas_signature() {
        assert_eq!(
            mask_sig("GET https://a/b?sv=1&sig=abc%2Fdef&se=2 failed"),
            "GET https://a/b?sv=1&sig=***&se=2 failed"
        );
    }
}
