//! Standard output that a reader may close early (`vault-cli ... | head -1`):
//! then the program ends quietly with success, as Unix tools do, instead of
//! panicking in `println!`. Every line the CLI prints goes through [`outln!`] or
//! [`out!`].

use std::fmt;
use std::io::{ErrorKind, Write};

/// Writes `args` to standard output and flushes it. A closed pipe ends the
/// program (exit 0); any other write failure ends it with exit 1 and says why.
pub fn write_stdout(args: fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// `print!` that survives a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` that survives a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}
