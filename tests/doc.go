// Package tests holds ocimount's integration tests: they build the real
// binary, mount real images through FUSE and compare the mounted tree with an
// independent extraction of the same image by umoci.
//
// They need root, /dev/fuse, umoci, skopeo, GNU tar, fusermount3, setcap,
// setfattr and busybox-static (Debian packages umoci skopeo fuse3 tar
// libcap2-bin attr busybox-static). Without them the tests skip, unless
// OCIMOUNT_INTEGRATION=1 is set (as CI does), in which case a missing
// prerequisite is a failure so that CI cannot pass by skipping.
//
//	OCIMOUNT_INTEGRATION=1 go test ./tests/
package tests
