"""Checks a running auctiond with Google's Python gRPC, which knows nothing of
our code: it lists every service through server reflection (v1alpha, the
stubs grpcio-reflection ships), loads each service's descriptors into a pool,
and asks grpc.health.v1 for each one's status. Exit code 0 when all five
services are listed, described and SERVING.

    python reflection_health.py 127.0.0.1:50051
"""

import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

EXPECTED = [
    "auction.v1.UserService",
    "auction.v1.CatalogService",
    "auction.v1.BiddingService",
    "auction.v1.PaymentService",
    "auction.v1.NotificationService",
]


def reflect(stub, request):
    (response,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    return response


def main(address):
    channel = grpc.insecure_channel(address)
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    listed = reflect(reflection, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = [service.name for service in listed.list_services_response.service]
    print("reflection lists:", ", ".join(sorted(names)))
    missing = [name for name in EXPECTED if name not in names]
    if missing:
        print("MISSING from reflection:", missing)
        return 1

    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add_file(proto):
        """Adds a file after its imports, fetching each import by file name."""
        if proto.name in added:
            return
        for dependency in proto.dependency:
            if dependency not in added:
                response = reflect(
                    reflection, reflection_pb2.ServerReflectionRequest(file_by_filename=dependency)
                )
                for raw in response.file_descriptor_response.file_descriptor_proto:
                    add_file(descriptor_pb2.FileDescriptorProto.FromString(raw))
        pool.Add(proto)
        added.add(proto.name)

    for name in EXPECTED:
        response = reflect(
            reflection, reflection_pb2.ServerReflectionRequest(file_containing_symbol=name)
        )
        for raw in response.file_descriptor_response.file_descriptor_proto:
            add_file(descriptor_pb2.FileDescriptorProto.FromString(raw))
        service = pool.FindServiceByName(name)
        print(f"{name}: {len(service.methods)} methods described")

    health = health_pb2_grpc.HealthStub(channel)
    for name in EXPECTED + [""]:
        status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
        label = name or "(server)"
        print(f"health {label}: {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}")
        if status != health_pb2.HealthCheckResponse.SERVING:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
