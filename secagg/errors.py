"""Exceptions raised by fedswarm.secagg.

Every way a secure-aggregation round can fail has its own class, so the daemon can tell
"a peer sent garbage" (log, drop the message, carry on) from "the round cannot finish"
(abort cleanly, try again next round) without parsing messages.
"""


class SecAggError(Exception):
    """Base class for every error raised by fedswarm.secagg."""


class ParameterSecurityError(SecAggError):
    """The BFV parameters are below 128-bit security or otherwise unusable."""


class MessageFormatError(SecAggError):
    """A message or payload is truncated, over-long, or not in the expected layout."""


class CiphertextLayoutError(MessageFormatError):
    """A ciphertext chunk is not one BFV ciphertext of this round's shape and level."""


class SignatureError(SecAggError):
    """A message's Ed25519 signature does not verify for its claimed sender."""


class TamperedPayloadError(SignatureError):
    """The payload does not hash to the sha256 digest bound in the signed header."""


class ReplayError(SecAggError):
    """A validly signed message belongs to another federation, group or round, or repeats."""


class ChunkOrderError(ReplayError):
    """A chunk of a streamed step arrived out of order or twice; the sender's stream stops there."""


class ContextMismatchError(SecAggError):
    """A message is bound to a different BFV context (ciphertext under another key)."""


class SecretKeyMissingError(SecAggError):
    """Decryption was attempted with a context that holds no secret key (e.g. by A)."""


class VectorShapeError(SecAggError):
    """A vector has the wrong length or shape for this round."""


class NonFiniteUpdateError(SecAggError):
    """The local update contains NaN or Inf; nothing is sent."""


class InvalidWeightError(SecAggError):
    """The aggregation weight is not a finite number in (0, params.max_weight]."""


class ProtocolViolationError(SecAggError):
    """A peer did something the protocol forbids (wrong step, wrong role, bad share...)."""


class ChunkCountError(ProtocolViolationError):
    """A chunk claims another chunk count or index than the group's vector length fixes."""


class UnexpectedStepError(ProtocolViolationError):
    """A message carries a step its sender or recipient may not use in its role."""


class ShareRevealRefusedError(ProtocolViolationError):
    """Revealing the requested shares would expose both secrets of one peer."""


class SurvivorSetMismatchError(ProtocolViolationError):
    """The aggregator's signed survivor set contradicts what this member knows."""


class RoundAbortedError(SecAggError):
    """The round cannot complete; every member gives up cleanly and nothing is learnt."""


class NotEnoughSurvivorsError(RoundAbortedError):
    """Fewer than the Shamir threshold t of members are left, so masks cannot be removed."""


class MismatchedLengthsError(NotEnoughSurvivorsError):
    """Too few members sent usable keys because some sent keys for another vector length.

    Told apart from members that sent nothing: the usual cause is a ``[federation]``
    setting that changes the averaged vector (``average_optimizer_state``, ...), which
    the daemon then names; a member that is merely late or gone needs no such hint.
    """


class TooFewContributorsError(NotEnoughSurvivorsError):
    """Fewer than MIN_CONTRIBUTORS (3) uploads would be in the sum: nothing is revealed.

    With two contributors the average and one's own update give the other's; a member
    refuses to send unmask shares, and D to decrypt, whatever the Shamir threshold says.
    """


class RoleUnavailableError(RoundAbortedError):
    """The aggregator or decryptor stopped answering, so the round cannot finish."""


class SpoolError(RoundAbortedError):
    """The aggregator could not write or read back its upload spool (spool.py).

    Local to A (a full disk, an I/O error, a spool file changed on disk), never a
    member's fault: A ends the round, says so to the group, and removes every spool file.
    """


class SpoolFullError(SpoolError):
    """The spool's disk is full (ENOSPC, EDQUOT) while A writes an upload to it."""
