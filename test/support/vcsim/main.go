// TEST DOUBLE LAUNCHER: starts govmomi's vCenter simulator (vcsim) on loopback for
// pilotlight's vSphere tests. Debian ships the simulator library
// (golang-github-vmware-govmomi-dev) but not vcsim's main, so this is a tiny one.
//
// It prints one JSON line on stdout: {"url": "...", "thumbprint": "AA:BB:..."}
// and runs until stdin is closed or it gets SIGTERM/SIGINT.
//
// Flags shape the inventory for the tests: -disk-kb grows the first disk of
// DC0_H0_VM0 and -extra-disk-kb adds a second disk to that VM (its key is whatever
// the simulator assigns, so the client must never assume 2000).
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

func fail(err error) {
	fmt.Fprintf(os.Stderr, "pilotlight-vcsim: %v\n", err)
	os.Exit(1)
}

func main() {
	useTLS := flag.Bool("tls", true, "serve HTTPS (self-signed certificate)")
	diskKB := flag.Int64("disk-kb", 0, "capacity of DC0_H0_VM0's first disk in KiB (0: simulator default)")
	extraKB := flag.Int64("extra-disk-kb", 0, "add a second disk of this many KiB to DC0_H0_VM0 (0: none)")
	user := flag.String("username", "", "accept only this user name (with -password); empty: any")
	pass := flag.String("password", "", "password for -username")
	genCert := flag.String("gen-cert", "", "only write a throw-away self-signed certificate for 127.0.0.1 (DIR/cert.pem, DIR/key.pem) and exit")
	flag.Parse()

	if *genCert != "" {
		if err := writeCert(*genCert); err != nil {
			fail(err)
		}
		return
	}

	model := simulator.VPX()
	if err := model.Create(); err != nil {
		fail(err)
	}
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0"}
	if *user != "" {
		model.Service.Listen.User = url.UserPassword(*user, *pass)
	}
	if *useTLS {
		model.Service.TLS = new(tls.Config)
	}
	server := model.Service.NewServer()

	thumb := ""
	if *useTLS {
		sum := sha1.Sum(server.Certificate().Raw)
		parts := make([]string, len(sum))
		for i, b := range sum {
			parts[i] = fmt.Sprintf("%02X", b)
		}
		thumb = strings.Join(parts, ":")
	}

	if *diskKB > 0 || *extraKB > 0 {
		if err := shape(server.URL, *diskKB, *extraKB); err != nil { // server.URL carries the credentials
			fail(err)
		}
	}

	u := *server.URL
	u.User = nil
	out, _ := json.Marshal(map[string]string{"url": u.String(), "thumbprint": thumb})
	fmt.Println(string(out))

	done := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(done) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-done:
	case <-sig:
	}
	server.Close()
	model.Remove()
}

func shape(u *url.URL, diskKB, extraKB int64) error {
	ctx := context.Background()
	c, err := govmomi.NewClient(ctx, u, true)
	if err != nil {
		return err
	}
	defer c.Logout(ctx)
	finder := find.NewFinder(c.Client, true)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		return err
	}
	finder.SetDatacenter(dc)
	vm, err := finder.VirtualMachine(ctx, "DC0_H0_VM0")
	if err != nil {
		return err
	}
	devices, err := vm.Device(ctx)
	if err != nil {
		return err
	}
	disks := devices.SelectByType((*types.VirtualDisk)(nil))
	if len(disks) == 0 {
		return fmt.Errorf("DC0_H0_VM0 has no disk")
	}
	first := disks[0].(*types.VirtualDisk)
	if diskKB > 0 {
		first.CapacityInKB = diskKB
		first.CapacityInBytes = diskKB * 1024
		if err := vm.EditDevice(ctx, first); err != nil {
			return fmt.Errorf("growing the first disk: %v", err)
		}
	}
	if extraKB > 0 {
		ctrl, err := devices.FindDiskController("scsi")
		if err != nil {
			return err
		}
		backing := first.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		ds := backing.Datastore
		name := strings.TrimSuffix(backing.FileName, "disk1.vmdk") + "disk2.vmdk"
		disk := devices.CreateDisk(ctrl, *ds, name)
		disk.CapacityInKB = extraKB
		disk.CapacityInBytes = extraKB * 1024
		if err := vm.AddDevice(ctx, disk); err != nil {
			return fmt.Errorf("adding a second disk: %v", err)
		}
	}
	return nil
}

// writeCert makes a self-signed ECDSA certificate for 127.0.0.1 (used by the test
// proxy, so the tests need no openssl command).
func writeCert(dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "127.0.0.1", Organization: []string{"pilotlight test double"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}
