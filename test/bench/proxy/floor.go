package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
)

// floorForwarder is the least work a Go HTTP/1.1 forwarder can do per
// request, to show what any Go proxy can reach on this machine: a
// goroutine per client connection, each with its own kept-alive connection
// to the backend; request header lines copied as bytes with the credential
// and forwarding headers added, the answer's header copied as bytes and
// its Content-Length body after it. It parses nothing else and checks
// nothing: it is a yardstick for the benchmark, not a proxy.
func floorForwarder(listen, backend string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			b, err := net.Dial("tcp", backend)
			if err != nil {
				return
			}
			defer b.Close()
			floorConn(c, b, backend)
		}()
	}
}

func floorConn(client, backend net.Conn, backendAddr string) error {
	cr, cw := bufio.NewReader(client), bufio.NewWriter(client)
	br, bw := bufio.NewReader(backend), bufio.NewWriter(backend)
	added := "Host: " + backendAddr + "\r\nAuthorization: Basic b3BlbmNvZGU6YmVuY2gtcGFzc3dvcmQ=\r\n" +
		"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n"
	for {
		for first := true; ; first = false {
			line, err := cr.ReadSlice('\n')
			if err != nil {
				return err
			}
			if len(line) <= 2 {
				break
			}
			if first || !bytes.HasPrefix(line, []byte("Host:")) {
				bw.Write(line)
			}
		}
		bw.WriteString(added)
		if err := bw.Flush(); err != nil {
			return err
		}
		length := -1
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return err
			}
			cw.Write(line)
			if len(line) <= 2 {
				break
			}
			if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
				length, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
			}
		}
		if length < 0 {
			return errors.New("the floor forwarder needs a Content-Length")
		}
		if _, err := io.CopyN(cw, br, int64(length)); err != nil {
			return err
		}
		if err := cw.Flush(); err != nil {
			return err
		}
	}
}
