// Empty: SwiftPM needs a source file in a C target. The functions live in the app's Rust library.
#include "bgsync.h"
