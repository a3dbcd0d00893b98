package codemode_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"strings"
	"time"

	codemode "github.com/codemode-dev/codemode/clients/go"
	codemodev1 "github.com/codemode-dev/codemode/clients/go/gen/codemode/v1"
)

// Streams an execution's events as they arrive, with a deadline for the whole call.
func ExampleSession_Stream() {
	client, err := codemode.Dial("127.0.0.1:50051", codemode.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	session, err := client.CreateSession(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer session.Close()
	for event, err := range session.Stream(ctx, "for i in range(3): print(i)", codemode.WithTimeout(10*time.Second)) {
		if err != nil {
			log.Fatal(err)
		}
		if out := event.GetOutput(); out != nil {
			fmt.Printf("%s", out.GetData())
		}
	}
}

// Branches on the ErrorInfo reason of a failed call.
func ExampleReason() {
	client, err := codemode.Dial("127.0.0.1:50051", codemode.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	_, err = client.Session("sessions/does-not-exist").Run(context.Background(), "1")
	var cmErr *codemode.Error
	switch {
	case codemode.Reason(err) == codemode.ReasonSessionNotFound:
		fmt.Println("create a new session")
	case errors.As(err, &cmErr):
		fmt.Println(cmErr.Code, cmErr.Message)
	}
}

// Streams an artifact up from any io.Reader and back down into any io.Writer.
func ExampleArtifacts_Upload() {
	client, err := codemode.Dial("127.0.0.1:50051", codemode.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()
	artifacts := client.Artifacts("")
	info, err := artifacts.Upload(ctx, "notes", strings.NewReader("hello"),
		codemode.WithArtifactType(codemodev1.ArtifactType_ARTIFACT_TYPE_TEXT))
	if err != nil {
		log.Fatal(err)
	}
	var data bytes.Buffer
	if _, err := artifacts.Download(ctx, "notes", &data); err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.GetSizeBytes(), data.String())
}
