import { ErrorReason } from "./gen/codemode/v1/error_reason_pb.js";

/** A codemode.v1.ErrorReason value name, as it appears in `CodemodeError.reason`. */
export type ReasonName = Exclude<keyof typeof ErrorReason, "UNSPECIFIED">;

/**
 * The reasons codemode puts in google.rpc.ErrorInfo, one constant per
 * codemode.v1.ErrorReason value (`Reason.SESSION_BUSY === "SESSION_BUSY"`).
 * Built from the generated enum, so it always has exactly the values the
 * protos define.
 */
export const Reason: { readonly [K in ReasonName]: K } = Object.freeze(
  Object.fromEntries(
    Object.keys(ErrorReason)
      .filter((key) => Number.isNaN(Number(key)) && key !== "UNSPECIFIED")
      .map((key) => [key, key]),
  ),
) as { readonly [K in ReasonName]: K };
