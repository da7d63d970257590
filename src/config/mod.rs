//! Station configuration.
