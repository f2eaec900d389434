// A Go grpc-go backend for Nexus's interop tests: interop.v1.InteropService with grpc-go's stock
// reflection (google.golang.org/grpc/reflection, which in Debian's grpc-go 1.33 serves
// grpc.reflection.v1alpha only) and rich error details from the status package. Built offline
// from Debian's packages by scripts/interop-setup.sh (GOPATH mode, no module proxy). Prints its
// port on its first line of stdout, then serves until stdin closes or it is killed.
package main

import (
	"context"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"os"
	"sync"
	"time"

	pb "interop/interop/v1"

	"github.com/golang/protobuf/ptypes/empty"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

const serverName = "grpc-go"

type server struct {
	pb.UnimplementedInteropServiceServer
	mu    sync.Mutex
	calls map[string]int32
}

func header(ctx context.Context, key string) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (s *server) Echo(ctx context.Context, r *pb.EchoRequest) (*pb.EchoReply, error) {
	return &pb.EchoReply{Text: r.Text, Server: serverName, Attributes: r.Attributes, SentAt: r.SentAt, Labels: r.Labels}, nil
}

func (s *server) Count(r *pb.CountRequest, stream pb.InteropService_CountServer) error {
	for i := int32(0); i < r.Count; i++ {
		if i > 0 {
			time.Sleep(time.Duration(r.IntervalMs) * time.Millisecond)
		}
		if err := stream.Send(&pb.CountReply{Index: i, Text: fmt.Sprintf("%s %d", serverName, i)}); err != nil {
			return err
		}
	}
	return nil
}

func (s *server) Fail(ctx context.Context, r *pb.FailRequest) (*empty.Empty, error) {
	st, err := status.New(codes.Code(r.Code), r.Message).WithDetails(&errdetails.ErrorInfo{
		Reason:   "INTEROP_FAILURE",
		Domain:   "interop.nexus",
		Metadata: map[string]string{"server": serverName},
	})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "attaching details: %v", err)
	}
	return nil, st.Err()
}

func (s *server) Flaky(ctx context.Context, r *pb.FlakyRequest) (*pb.FlakyReply, error) {
	key := header(ctx, "nexus-idempotency-key")
	s.mu.Lock()
	s.calls[key]++
	n := s.calls[key]
	s.mu.Unlock()
	if n <= r.Failures {
		return nil, status.Errorf(codes.Unavailable, "%s: failing call %d of %d", serverName, n, r.Failures)
	}
	return &pb.FlakyReply{Attempts: n, IdempotencyKey: key}, nil
}

func (s *server) Inspect(ctx context.Context, r *pb.InspectRequest) (*pb.InspectReply, error) {
	reply := &pb.InspectReply{
		IdempotencyKey: header(ctx, "nexus-idempotency-key"),
		Traceparent:    header(ctx, "traceparent"),
		Server:         serverName,
	}
	if deadline, ok := ctx.Deadline(); ok {
		reply.HasDeadline = true
		reply.DeadlineRemainingMs = time.Until(deadline).Milliseconds()
	}
	return reply, nil
}

func main() {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot listen:", err)
		os.Exit(1)
	}
	s := grpc.NewServer()
	pb.RegisterInteropServiceServer(s, &server{calls: map[string]int32{}})
	reflection.Register(s)
	fmt.Println(lis.Addr().(*net.TCPAddr).Port)
	// The test holds our stdin: when it goes away (even killed), so do we.
	go func() {
		_, _ = io.Copy(ioutil.Discard, os.Stdin)
		s.Stop()
	}()
	_ = s.Serve(lis)
}
