//! Taking a recovery point: quiesce, change detection at 4 KiB, and the
//! read -> hash -> compress -> encrypt -> upload pipeline into the vault.
