//! Prints the trace and failures of one WIA 2.0 scenario against one built-in driver.
//! `cargo run -p scanconform --example wia2_trace -- DRIVER SCENARIO.json`
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let s = scanconform::scenario::wia2::load(Path::new(&args[2]), &fixtures.join("scenarios"))
        .unwrap();
    let f = scanconform::drivers::wia2::factory(&args[1]).unwrap();
    let r = scanconform::run::wia2::run2(&s, &args[1], f, &fixtures.join("profiles")).unwrap();
    if args.get(3).map(String::as_str) != Some("--rules") {
        print!("{}", r.trace.render_text());
    }
    for x in &r.report.results {
        println!("  {:<40} {:?}", x.id, x.status);
    }
    print!("{}", r.failure_details());
}
