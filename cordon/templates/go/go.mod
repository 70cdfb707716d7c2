module {{name}}

go 1.24

// The helper is the local module in ./cordon: the build asks no module proxy.
require cordon v0.0.0

replace cordon => ./cordon
