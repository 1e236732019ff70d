//! `tabbyctl`: what operators do with calicoctl, against tabby's datastore.

use clap::Parser;

fn main() {
    let cli = ctl::cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    match runtime.block_on(ctl::run(cli, &mut std::io::stdout())) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
