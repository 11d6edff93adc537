//! What a package installs beside the binaries: man pages (clap_mangen)
//! and shell completions (clap_complete), made from the very command-line
//! definitions the binaries parse, so `--help` and the man page agree.

use std::path::Path;

/// Writes `cmd`'s man pages to `dir/man1` (one per subcommand too,
/// `simulcastctl-events.1`, ...) and its bash, zsh and fish completions to
/// `dir/completions`.
pub fn write_man_and_completions(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    let man = dir.join("man1");
    std::fs::create_dir_all(&man)?;
    clap_mangen::generate_to(cmd.clone(), &man)?;
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)?;
    let name = cmd.get_name().to_owned();
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), &name, &completions)?;
    }
    Ok(())
}
