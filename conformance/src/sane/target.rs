//! What `--driver sane:BACKEND[:DEVICE]` names: the backend library to load and the device to
//! open ([`resolve`]).

use std::path::PathBuf;

/// Why `sane:SPEC` names no backend; `Display` is one line.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// `sane:` with nothing after it.
    #[error("--driver sane: needs a backend name or library path (sane:test)")]
    NoBackend,
    /// A library path that is not a file.
    #[error("SANE backend library {} does not exist", .0.display())]
    NoSuchLibrary(PathBuf),
    /// A name with characters a backend name never has.
    #[error("SANE backend name {0:?} is not a plain name")]
    NotAName(String),
    /// No `libsane-NAME.so.1` in any library folder.
    #[error("SANE backend {backend:?} not found: no libsane-{backend}.so.1 in {} (install Debian's libsane1, or pass a library path)", .dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound {
        /// The name asked for.
        backend: String,
        /// The folders searched ([`library_dirs`]).
        dirs: Vec<PathBuf>,
    },
}

/// What `--driver sane:BACKEND[:DEVICE]` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The backend's name (`test`), used for `sane_<name>_*` symbols and the expected-failure
    /// list.
    pub name: String,
    /// The library to load.
    pub library: PathBuf,
    /// The device to open; `None` = the first device the backend lists.
    pub device: Option<String>,
}

/// Folders searched for `libsane-NAME.so.1`, the multiarch one first.
pub fn library_dirs() -> Vec<PathBuf> {
    let arch = std::env::consts::ARCH;
    let multiarch = match arch {
        "arm" => "arm-linux-gnueabihf".to_string(),
        "x86" => "i386-linux-gnu".to_string(),
        a => format!("{a}-linux-gnu"),
    };
    vec![
        PathBuf::from(format!("/usr/lib/{multiarch}/sane")),
        PathBuf::from("/usr/lib64/sane"),
        PathBuf::from("/usr/lib/sane"),
        PathBuf::from("/usr/local/lib/sane"),
    ]
}

/// Resolves `BACKEND[:DEVICE]` (the part after `sane:`). BACKEND is a name looked up in
/// [`library_dirs`] or a path to a `libsane-*.so*` file.
pub fn resolve(spec: &str) -> Result<Target, TargetError> {
    let (backend, device) = match spec.split_once(':') {
        Some((b, d)) if !d.is_empty() => (b, Some(d.to_string())),
        Some((b, _)) => (b, None),
        None => (spec, None),
    };
    if backend.is_empty() {
        return Err(TargetError::NoBackend);
    }
    let is_path = backend.contains('/') || backend.contains(".so");
    if is_path {
        let path = PathBuf::from(backend);
        if !path.is_file() {
            return Err(TargetError::NoSuchLibrary(path));
        }
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
        let name = file
            .strip_prefix("libsane-")
            .and_then(|r| r.split(".so").next())
            .unwrap_or("")
            .to_string();
        return Ok(Target {
            name,
            library: path,
            device,
        });
    }
    if !backend
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(TargetError::NotAName(backend.to_string()));
    }
    let dirs = library_dirs();
    for dir in &dirs {
        for file in [
            format!("libsane-{backend}.so.1"),
            format!("libsane-{backend}.so"),
        ] {
            let p = dir.join(file);
            if p.is_file() {
                return Ok(Target {
                    name: backend.to_string(),
                    library: p,
                    device,
                });
            }
        }
    }
    Err(TargetError::NotFound {
        backend: backend.to_string(),
        dirs,
    })
}
