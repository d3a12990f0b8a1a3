//! Finding the site's MPI library, loading it with `dlopen`, and telling
//! which binary interface it has. Nothing here initialises MPI, so `oxmpi
//! info` can use it too.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::{Path, PathBuf};

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};

use crate::error::{Error, Result};

/// The shared-library names oxmpi looks for, by ABI.
pub const SONAME_STANDARD: &str = "libmpi_abi.so.1";
pub const SONAME_MPICH: &str = "libmpi.so.12";
pub const SONAME_OPENMPI: &str = "libmpi.so.40";

/// A library's binary interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbiKind {
    /// The MPI-5 standard ABI (`libmpi_abi.so`).
    Standard,
    /// MPICH's ABI (`libmpi.so.12`): MPICH, Intel MPI, Cray MPICH, MVAPICH.
    Mpich,
    /// Open MPI's ABI (`libmpi.so.40`).
    OpenMpi,
}

impl AbiKind {
    pub fn describe(self) -> &'static str {
        match self {
            AbiKind::Standard => "MPI-5 standard ABI",
            AbiKind::Mpich => "MPICH ABI",
            AbiKind::OpenMpi => "Open MPI ABI",
        }
    }
}

/// Which soname to try first: a launcher's own library is the one that can
/// talk to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preference {
    /// Open MPI's mpirun/prterun or another PMIx launcher.
    OpenMpi,
    /// MPICH's hydra or another PMI-1/PMI-2 launcher.
    Mpich,
    /// No hint (Slurm, PALS, no launcher): the standard ABI first.
    Any,
}

/// A loaded MPI library.
pub struct Loaded {
    lib: Library,
    /// The file that was loaded.
    pub path: String,
    /// How it was found, for `oxmpi info` and `Get_library_version`.
    pub found_by: String,
    pub abi: AbiKind,
    /// What `MPI_Get_library_version` says.
    pub version: String,
}

impl Loaded {
    /// The address of an exported symbol.
    fn symbol_address(&self, name: &str) -> Option<*mut c_void> {
        // SAFETY: we only read the symbol's address, never call or
        // dereference it here.
        let sym = unsafe { self.lib.get::<*mut c_void>(name) }.ok()?;
        let addr = sym.into_raw();
        (!addr.is_null()).then_some(addr)
    }

    /// An exported function of type `F` (a `unsafe extern "C" fn` type).
    ///
    /// # Safety
    /// `F` must be the function's true C signature.
    pub(crate) unsafe fn function<F: Copy>(&self, name: &str) -> Option<F> {
        assert_eq!(
            std::mem::size_of::<F>(),
            std::mem::size_of::<*mut c_void>(),
            "function pointers are pointer-sized"
        );
        let addr = self.symbol_address(name)?;
        // SAFETY: `addr` is the address of the function `name`, whose
        // signature is `F` by this function's contract; a function pointer
        // has the size and representation of a data pointer on every
        // platform dlopen exists on (POSIX requires it).
        Some(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&addr) })
    }

    /// The address of an exported object: an Open MPI predefined handle.
    pub(crate) fn object_address(&self, name: &str) -> Result<usize> {
        self.symbol_address(name)
            .map(|a| a as usize)
            .ok_or_else(|| {
                Error::Bootstrap(format!(
                    "{} does not export {name}: not the Open MPI ABI oxmpi knows",
                    self.path
                ))
            })
    }

    /// The first line of the version string.
    pub fn version_line(&self) -> &str {
        self.version.lines().next().unwrap_or("").trim()
    }
}

/// Opens `name` (a path, or a soname for the loader to search) with its
/// symbols global: Open MPI's and MPICH's plugins resolve symbols of
/// libmpi, as when libmpi is linked into the executable.
fn open(name: &str, found_by: &str) -> std::result::Result<Loaded, String> {
    // SAFETY: loading an MPI library runs its initialisers, which only set
    // up the library's own state; it is never unloaded (see `locate`).
    let lib = unsafe { Library::open(Some(name), RTLD_NOW | RTLD_GLOBAL) }.map_err(|e| {
        // libloading's message is "dlopen failed"; dlerror's is the source.
        match std::error::Error::source(&e) {
            Some(why) => format!("{why}"),
            None => format!("{name}: {e}"),
        }
    })?;
    let mut loaded = Loaded {
        lib,
        path: name.to_owned(),
        found_by: found_by.to_owned(),
        abi: AbiKind::Mpich,
        version: String::new(),
    };
    if let Some(addr) = loaded.symbol_address("MPI_Init_thread") {
        if let Some(file) = file_of(addr) {
            loaded.path = file;
        }
    } else {
        return Err(format!("{name}: not an MPI library (no MPI_Init_thread)"));
    }
    loaded.version = library_version(&loaded);
    loaded.abi = detect_abi(&loaded).map_err(|e| format!("{}: {e}", loaded.path))?;
    Ok(loaded)
}

/// The file that defines the symbol at `addr`.
fn file_of(addr: *mut c_void) -> Option<String> {
    // SAFETY: Dl_info is plain data; dladdr fills it or returns 0.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: `addr` is a symbol address inside a loaded object.
    let ok = unsafe { libc::dladdr(addr, &mut info) };
    if ok == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated string owned by the loader.
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    let name = name.to_string_lossy().into_owned();
    Some(
        std::fs::canonicalize(&name)
            .map(|p| p.display().to_string())
            .unwrap_or(name),
    )
}

/// `MPI_Get_library_version`, which MPI allows before initialisation.
fn library_version(lib: &Loaded) -> String {
    type GetVersion = unsafe extern "C" fn(*mut c_char, *mut c_int) -> c_int;
    // SAFETY: the MPI standard's signature, identical in every ABI.
    let Some(f) = (unsafe { lib.function::<GetVersion>("MPI_Get_library_version") }) else {
        return String::new();
    };
    // MPI_MAX_LIBRARY_VERSION_STRING is 8192 in MPICH and the standard
    // ABI, 256 in Open MPI: the largest is enough for all.
    let mut buf = vec![0u8; 8192];
    let mut len: c_int = 0;
    // SAFETY: `buf` has room for MPI_MAX_LIBRARY_VERSION_STRING bytes.
    let rc = unsafe { f(buf.as_mut_ptr().cast(), &mut len) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).trim_end().to_owned()
}

/// Tells the ABI from what the library exports and says about itself.
fn detect_abi(lib: &Loaded) -> std::result::Result<AbiKind, String> {
    type AbiGetVersion = unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int;
    // MPI-5: a library built for the standard ABI reports its version;
    // MPICH's own-ABI build exports the function too but reports -1.
    // SAFETY: MPI-5's signature for MPI_Abi_get_version.
    if let Some(f) = unsafe { lib.function::<AbiGetVersion>("MPI_Abi_get_version") } {
        let (mut major, mut minor) = (-1, -1);
        // SAFETY: two valid int pointers; MPI-5 allows the call before
        // initialisation.
        if unsafe { f(&mut major, &mut minor) } == 0 && major >= 1 {
            return Ok(AbiKind::Standard);
        }
    }
    if lib.symbol_address("ompi_mpi_comm_world").is_some() {
        return Ok(AbiKind::OpenMpi);
    }
    let v = lib.version.to_ascii_lowercase();
    if ["mpich", "intel(r) mpi", "mvapich"]
        .iter()
        .any(|k| v.contains(k))
    {
        return Ok(AbiKind::Mpich);
    }
    Err(format!(
        "unknown MPI implementation (not the standard ABI, Open MPI or the MPICH family): {:?}",
        lib.version_line()
    ))
}

/// Sonames in the order to try them.
fn sonames(pref: Preference) -> [&'static str; 3] {
    match pref {
        Preference::OpenMpi => [SONAME_OPENMPI, SONAME_STANDARD, SONAME_MPICH],
        Preference::Mpich | Preference::Any => [SONAME_STANDARD, SONAME_MPICH, SONAME_OPENMPI],
    }
}

/// Library directories of the installations the launcher that started us
/// (or a process above it) ran from: `<prefix>/bin/mpiexec` goes with
/// `<prefix>/lib/libmpi.so`.
fn launcher_lib_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut pid = std::os::unix::process::parent_id();
    for _ in 0..6 {
        if pid <= 1 {
            break;
        }
        if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
            if let Some(prefix) = exe.parent().and_then(Path::parent) {
                for lib in ["lib", "lib64"] {
                    let d = prefix.join(lib);
                    if d.is_dir() && !dirs.contains(&d) {
                        dirs.push(d);
                    }
                }
            }
        }
        pid = match parent_of(pid) {
            Some(p) => p,
            None => break,
        };
    }
    dirs
}

/// The parent of process `pid` (from /proc/PID/stat).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Finds and loads the MPI library: `OXMPI_LIBMPI` if set (and nothing
/// else), else the dynamic loader's search path, else the installation of
/// the launcher that started this process. The library stays loaded for
/// the life of the process (MPI cannot be initialised twice anyway).
///
/// Why no library was found.
#[derive(Debug)]
pub struct NotFound {
    /// `OXMPI_LIBMPI` named a library that could not be used: an error
    /// whatever the launcher.
    pub explicit: bool,
    /// What was tried, and why each failed.
    pub tried: Vec<String>,
}

/// On failure, says what was tried and why each failed.
pub fn locate(pref: Preference) -> std::result::Result<&'static Loaded, NotFound> {
    let mut tried = Vec::new();
    if let Some(name) = std::env::var_os("OXMPI_LIBMPI") {
        let name = name.to_string_lossy().into_owned();
        return match open(&name, "OXMPI_LIBMPI") {
            Ok(l) => Ok(Box::leak(Box::new(l))),
            Err(e) => Err(NotFound {
                explicit: true,
                tried: vec![format!("OXMPI_LIBMPI={name}: {e}")],
            }),
        };
    }
    for soname in sonames(pref) {
        match open(soname, "the dynamic loader's search path") {
            Ok(l) => return Ok(Box::leak(Box::new(l))),
            Err(e) => tried.push(e),
        }
    }
    for dir in launcher_lib_dirs() {
        for soname in sonames(pref) {
            let path = dir.join(soname);
            if !path.exists() {
                continue;
            }
            let path = path.display().to_string();
            let how = format!("the launcher's installation ({})", dir.display());
            match open(&path, &how) {
                Ok(l) => return Ok(Box::leak(Box::new(l))),
                Err(e) => tried.push(e),
            }
        }
    }
    Err(NotFound {
        explicit: false,
        tried,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_pid_parses() {
        let me = std::process::id();
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
    }

    #[test]
    fn launcher_order() {
        assert_eq!(sonames(Preference::OpenMpi)[0], SONAME_OPENMPI);
        assert_eq!(sonames(Preference::Mpich)[0], SONAME_STANDARD);
    }
}
