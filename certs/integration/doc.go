// Package integration holds certd tests against the other real edgestack
// daemons (dnsd's change API for DNS-01), kept apart so that certd's own
// packages build and test without them.
package integration
