package codemode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	codemodev1 "github.com/codemode-dev/codemode/clients/go/gen/codemode/v1"
	"google.golang.org/protobuf/types/known/structpb"
)

// ArtifactChunkBytes is the most data one upload message carries; the
// server refuses larger chunks.
const ArtifactChunkBytes = 1 << 20

// Artifacts is a tenant's store of named data that outlives sessions:
// bytes, text or JSON, kept with a type, description and metadata.
// Sandboxed code reads the same artifacts as `artifacts.load(name)`.
// Data always moves in chunks, so an artifact is never held whole in
// memory by this package.
type Artifacts struct {
	client codemodev1.ArtifactServiceClient
	tenant string
}

// ArtifactName turns an id ("report") into a resource name ("artifacts/report").
func ArtifactName(id string) string { return "artifacts/" + id }

// ArtifactOption sets a field of the artifact being uploaded.
type ArtifactOption func(*artifactHeader)

type artifactHeader struct {
	artifact  *codemodev1.Artifact
	metadata  map[string]any
	sizeBytes int64
}

// WithArtifactType says how the data is read back: ARTIFACT_TYPE_TEXT
// (UTF-8 text), ARTIFACT_TYPE_JSON (a UTF-8 JSON document) or the default
// ARTIFACT_TYPE_BYTES.
func WithArtifactType(t codemodev1.ArtifactType) ArtifactOption {
	return func(h *artifactHeader) { h.artifact.Type = t }
}

// WithDescription is the artifact's human-readable description.
func WithDescription(description string) ArtifactOption {
	return func(h *artifactHeader) { h.artifact.Description = description }
}

// WithMetadata attaches JSON-like metadata (values as structpb.NewValue
// accepts them).
func WithMetadata(metadata map[string]any) ArtifactOption {
	return func(h *artifactHeader) { h.metadata = metadata }
}

// WithSizeBytes declares how many bytes the reader will yield, so the server
// refuses an artifact over its limit (ARTIFACT_TOO_LARGE) before any data is
// sent. Upload finds the size itself for readers with a Len method
// (bytes.Reader, strings.Reader, bytes.Buffer) and regular *os.File; a
// declared size the data does not match fails the upload (INVALID_ARGUMENT),
// and nothing is stored.
func WithSizeBytes(n int64) ArtifactOption {
	return func(h *artifactHeader) { h.sizeBytes = n }
}

// knownSize is the number of bytes left in data when the reader can say so
// without being read, else 0 (undeclared).
func knownSize(data io.Reader) int64 {
	switch r := data.(type) {
	case interface{ Len() int }:
		return int64(r.Len())
	case *os.File:
		info, err := r.Stat()
		if err != nil || !info.Mode().IsRegular() {
			return 0
		}
		offset, err := r.Seek(0, io.SeekCurrent)
		if err != nil || offset > info.Size() {
			return 0
		}
		return info.Size() - offset
	}
	return 0
}

// Upload stores what data yields under id, replacing any artifact of that
// name. It streams: one chunk of at most ArtifactChunkBytes is read, sent
// and released at a time, so data may be a file or a pipe of any size the
// server accepts. The size is declared up front when known (see
// WithSizeBytes). If reading data fails, the upload is cancelled (nothing
// is stored) and the read error is returned.
func (a *Artifacts) Upload(ctx context.Context, id string, data io.Reader, opts ...ArtifactOption) (*codemodev1.Artifact, error) {
	header := artifactHeader{
		artifact:  &codemodev1.Artifact{Name: ArtifactName(id), Type: codemodev1.ArtifactType_ARTIFACT_TYPE_BYTES},
		sizeBytes: knownSize(data),
	}
	for _, opt := range opts {
		opt(&header)
	}
	if header.metadata != nil {
		metadata, err := structpb.NewStruct(header.metadata)
		if err != nil {
			return nil, fmt.Errorf("codemode: artifact metadata: %w", err)
		}
		header.artifact.Metadata = metadata
	}
	// Cancelling is how a half-sent upload is abandoned: the server stores
	// an artifact only when the stream is closed normally.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := a.client.UploadArtifact(ctx)
	if err != nil {
		return nil, wrapError(err)
	}
	if err := stream.Send(&codemodev1.UploadArtifactRequest{Tenant: a.tenant, SizeBytes: header.sizeBytes, Part: &codemodev1.UploadArtifactRequest_Artifact{Artifact: header.artifact}}); err != nil {
		return nil, uploadFailure(stream, err)
	}
	for {
		// A fresh buffer per chunk: gRPC may still hold the previous message.
		chunk := make([]byte, ArtifactChunkBytes)
		n, readErr := io.ReadFull(data, chunk)
		if n > 0 {
			if err := stream.Send(&codemodev1.UploadArtifactRequest{Part: &codemodev1.UploadArtifactRequest_Chunk{Chunk: chunk[:n]}}); err != nil {
				return nil, uploadFailure(stream, err)
			}
		}
		if errors.Is(readErr, io.EOF) || errors.Is(readErr, io.ErrUnexpectedEOF) {
			break
		}
		if readErr != nil {
			cancel()
			return nil, fmt.Errorf("codemode: read artifact data: %w", readErr)
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, wrapError(err)
	}
	return resp.GetArtifact(), nil
}

// uploadFailure finds the real status of an upload whose Send failed: grpc-go
// reports only io.EOF from Send when the server has already answered (an
// upload too large, a quota), and the answer itself comes from the receive.
func uploadFailure(stream codemodev1.ArtifactService_UploadArtifactClient, sendErr error) error {
	if !errors.Is(sendErr, io.EOF) {
		return wrapError(sendErr)
	}
	_, err := stream.CloseAndRecv()
	if err == nil {
		return errors.New("codemode: the server accepted an upload it stopped reading")
	}
	return wrapError(err)
}

// Download writes the artifact's data to w as its chunks arrive and returns
// its metadata. If w fails, the download is cancelled and the write error
// returned; what was written before stays written.
func (a *Artifacts) Download(ctx context.Context, id string, w io.Writer) (*codemodev1.Artifact, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // releases the stream however the loop ends
	stream, err := a.client.DownloadArtifact(ctx, &codemodev1.DownloadArtifactRequest{Tenant: a.tenant, Name: ArtifactName(id)})
	if err != nil {
		return nil, wrapError(err)
	}
	var artifact *codemodev1.Artifact
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return artifact, wrapError(err)
		}
		switch part := resp.GetPart().(type) {
		case *codemodev1.DownloadArtifactResponse_Artifact:
			artifact = part.Artifact
		case *codemodev1.DownloadArtifactResponse_Chunk:
			if _, err := w.Write(part.Chunk); err != nil {
				return artifact, fmt.Errorf("codemode: write artifact data: %w", err)
			}
		}
	}
	if artifact == nil {
		return nil, errors.New("codemode: artifact download ended without the artifact's metadata")
	}
	return artifact, nil
}

// Get returns the artifact's metadata (type, size, sha256, ...) without its data.
func (a *Artifacts) Get(ctx context.Context, id string) (*codemodev1.Artifact, error) {
	resp, err := a.client.GetArtifact(ctx, &codemodev1.GetArtifactRequest{Tenant: a.tenant, Name: ArtifactName(id)})
	return resp.GetArtifact(), wrapError(err)
}

// List returns every artifact's metadata, following pagination.
func (a *Artifacts) List(ctx context.Context) ([]*codemodev1.Artifact, error) {
	var all []*codemodev1.Artifact
	token := ""
	for {
		resp, err := a.client.ListArtifacts(ctx, &codemodev1.ListArtifactsRequest{Tenant: a.tenant, PageToken: token})
		if err != nil {
			return all, wrapError(err)
		}
		all = append(all, resp.GetArtifacts()...)
		token = resp.GetNextPageToken()
		if token == "" {
			return all, nil
		}
	}
}

// Delete removes the artifact (NOT_FOUND / ARTIFACT_NOT_FOUND when there is none).
func (a *Artifacts) Delete(ctx context.Context, id string) error {
	_, err := a.client.DeleteArtifact(ctx, &codemodev1.DeleteArtifactRequest{Tenant: a.tenant, Name: ArtifactName(id)})
	return wrapError(err)
}
