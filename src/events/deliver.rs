//! One delivery attempt and the back-off between attempts: to be written.
