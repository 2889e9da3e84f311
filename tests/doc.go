// Package tests holds ocimount's integration tests: they build the real
// binary, mount real images through FUSE and compare the mounted tree with an
// independent extraction of the same image by umoci.
//
// They need root, /dev/fuse, umoci, skopeo, GNU tar, fusermount3, setcap,
// setfattr and busybox-static (Debian packages umoci skopeo fuse3 tar
// libcap2-bin attr busybox-static); the registry tests (registry_*.go) also
// need docker-registry and htpasswd (packages docker-registry apache2-utils):
// they run Debian's distribution 2.8 on loopback (plain, TLS with a CA made
// by the test plus htpasswd, or token auth with a token server in the test)
// and put a fault-injecting proxy (faultproxy_test.go) in front of it. Without them the tests skip, unless
// OCIMOUNT_INTEGRATION=1 is set (as CI does), in which case a missing
// prerequisite is a failure so that CI cannot pass by skipping.
//
//	OCIMOUNT_INTEGRATION=1 go test ./tests/
package tests
