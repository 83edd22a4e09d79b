//! HCL -> typed model: parse (hcl-edit keeps spans), evaluate (variables,
//! locals, references, for_each), check (references, types, cycles), and
//! report every problem as a miette diagnostic with its source span.
