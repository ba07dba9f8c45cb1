//! The job body of the execute-now benchmark: prints the wall-clock time it started at, in
//! nanoseconds since the Unix epoch, and exits. Nothing else, so its start is the measurement.

fn main() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    println!("{now}");
}
