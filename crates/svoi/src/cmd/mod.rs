//! One module per subcommand; each exposes `Args` (clap) and `run(&Args) -> Result<ExitCode>`.

pub mod decode;
pub mod fields;
