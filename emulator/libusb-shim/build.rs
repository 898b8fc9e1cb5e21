//! Gives the shared object the SONAME of libusb 1.0, so that the dynamic loader accepts it
//! for every program whose NEEDED entry is `libusb-1.0.so.0` (Cargo has no field for this:
//! rust-lang/cargo#5045).

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libusb-1.0.so.0");
}
