//! Host-side QEMU test helpers (placeholder).
