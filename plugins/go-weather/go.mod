module go-weather

go 1.24

// The SDK is a local module: the build asks no module proxy (only the standard library is used).
require cordon v0.0.0

replace cordon => ../go-sdk
