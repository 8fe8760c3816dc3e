//! Terminal output shared by the commands that print tables (`demo`,
//! `demo books`, `simulate`, `bench`).

use comfy_table::{Table, presets};

/// An empty table drawn with box characters on a terminal (`tty`), plain
/// ASCII otherwise (pipes, logs, CI).
pub(crate) fn new_table(tty: bool) -> Table {
    let mut table = Table::new();
    table.load_preset(if tty {
        presets::UTF8_FULL_CONDENSED
    } else {
        presets::ASCII_FULL_CONDENSED
    });
    table
}
