"""A minimal ctypes binding to libespeak-ng, as shipped by the ``espeakng-loader`` wheel.

The synthetic corpus needs audio *and* time-stamped phonemes from one synthesis call, which the
espeak command line cannot give without a subprocess per utterance, so we talk to the shared
library directly: synchronous mode (``espeak_Synth`` returns when the utterance is done) and a
synth callback that collects the samples and the phoneme events.

libespeak-ng keeps global state, so there is one engine per process (:func:`get_engine`),
and calls into it are serialised by a lock.
"""

from __future__ import annotations

import _ctypes
import ctypes
import os
import threading
from dataclasses import dataclass

import numpy as np

# espeak_AUDIO_OUTPUT
AUDIO_OUTPUT_SYNCHRONOUS = 2
# espeak_Initialize options
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_DONT_EXIT = 0x8000
# espeak_EVENT_TYPE
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
EVENT_SENTENCE = 2
EVENT_MARK = 3
EVENT_PLAY = 4
EVENT_END = 5
EVENT_MSG_TERMINATED = 6
EVENT_PHONEME = 7
EVENT_SAMPLERATE = 8
# espeak_PARAMETER
PARAM_RATE = 1
PARAM_VOLUME = 2
PARAM_PITCH = 3
PARAM_RANGE = 4
PARAM_WORDGAP = 7
# espeak_POSITION_TYPE / synth flags
POS_CHARACTER = 1
CHARS_UTF8 = 1
EE_OK = 0


class EspeakError(RuntimeError):
    """libespeak-ng could not be loaded, initialised, or refused a request."""


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),
    ]


class EspeakEvent(ctypes.Structure):
    """``espeak_EVENT`` from speak_lib.h (natural alignment, as the C compiler lays it out)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds from the start of the message
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(EspeakEvent)
)


@dataclass(frozen=True)
class PhonemeEvent:
    """One phoneme as espeak reports it: its mnemonic and where it starts in the audio."""

    name: str
    start: float  # seconds


@dataclass(frozen=True)
class Synthesis:
    """The result of one :meth:`Espeak.synthesize` call."""

    samples: np.ndarray  # int16, mono, at ``sample_rate``
    sample_rate: int
    phonemes: list[PhonemeEvent]


class Espeak:
    """One libespeak-ng instance; use :func:`get_engine` rather than building it yourself.

    libespeak-ng carries state from one utterance to the next that ``espeak_Terminate`` /
    ``espeak_Initialize`` do not reset (pitch-flutter phase, gain control, cycle counters), so the
    same text would come out slightly different depending on what was spoken before. To make
    every synthesis a pure function of its arguments, :meth:`synthesize` by default unloads and
    reloads the shared library (``dlclose``/``dlopen``, a few milliseconds), which gives fresh
    static data. That only works while this object holds the only handle on the library, so
    nothing else in the process should load libespeak-ng. Each reload leaks roughly 100-200 kB
    inside libespeak-ng (memory that ``espeak_Terminate`` does not free), so bulk callers pass
    ``reset=False`` and call :meth:`reset` every few dozen utterances instead.

    Args:
        library_path: the shared library; defaults to the one in ``espeakng-loader``.
        data_path: the ``espeak-ng-data`` directory; defaults to the one in ``espeakng-loader``.
    """

    def __init__(self, library_path: str | None = None, data_path: str | None = None) -> None:
        if library_path is None or data_path is None:
            try:
                import espeakng_loader
            except ImportError as exc:
                raise EspeakError(
                    "espeakng-loader is not installed (pip install espeakng-loader)"
                ) from exc
            library_path = library_path or espeakng_loader.get_library_path()
            data_path = data_path or espeakng_loader.get_data_path()
        self.library_path = str(library_path)
        self.data_path = str(data_path)
        self._lib: ctypes.CDLL | None = None
        self._chunks: list[np.ndarray] = []
        self._events: list[PhonemeEvent] = []
        # The CFUNCTYPE object must outlive every synthesis: libespeak-ng only keeps the raw
        # function pointer, so a garbage-collected callback would crash the process.
        self._callback = _SynthCallback(self._on_synth)
        self._voice: str | None = None
        self._params: dict[int, int] = {}
        self._lock = threading.Lock()
        self.sample_rate = 0
        self._load()

    def _load(self) -> None:
        try:
            lib = ctypes.CDLL(self.library_path)
        except OSError as exc:
            raise EspeakError(f"cannot load libespeak-ng from {self.library_path}: {exc}") from exc
        _declare(lib)
        rate = lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS,
            0,
            os.fsencode(self.data_path),
            INITIALIZE_PHONEME_EVENTS | INITIALIZE_DONT_EXIT,
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (data path {self.data_path})")
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib
        self.sample_rate = int(rate)

    def _unload(self) -> None:
        lib, self._lib = self._lib, None
        if lib is not None:
            lib.espeak_Terminate()
            _ctypes.dlclose(lib._handle)

    def reset(self) -> None:
        """Reload the library so that no state survives from earlier syntheses."""
        self._unload()
        self._load()
        if self._voice is not None:
            self.set_voice(self._voice)
        for param, value in self._params.items():
            self._set_parameter(param, value)

    def close(self) -> None:
        """Terminate espeak and unload the library; the engine cannot be used afterwards."""
        self._unload()

    def _on_synth(self, wav, numsamples, events) -> int:  # noqa: ANN001 - ctypes pointers
        if numsamples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        if events:
            i = 0
            while events[i].type != EVENT_LIST_TERMINATED:
                event = events[i]
                if event.type == EVENT_PHONEME:
                    name = event.id.string.decode("utf-8", errors="replace")
                    self._events.append(PhonemeEvent(name, event.audio_position / 1000.0))
                i += 1
        return 0

    def _require(self) -> ctypes.CDLL:
        if self._lib is None:
            raise EspeakError("the espeak engine was closed")
        return self._lib

    def set_voice(self, name: str) -> None:
        """Select a voice by name, e.g. ``"en+m3"`` (language + variant)."""
        if self._require().espeak_SetVoiceByName(name.encode()) != EE_OK:
            self._voice = None
            raise EspeakError(f"espeak has no voice {name!r}")
        self._voice = name

    def _set_parameter(self, param: int, value: int) -> None:
        if self._require().espeak_SetParameter(param, int(value), 0) != EE_OK:
            raise EspeakError(f"espeak refused parameter {param} = {value}")
        self._params[param] = int(value)

    def set_parameters(
        self, rate: int | None = None, pitch: int | None = None, pitch_range: int | None = None
    ) -> None:
        """Set speaking rate (words/min, 80-450), base pitch (0-100) and pitch range (0-100).

        Pitch and range are relative to the voice variant's own pitch settings.
        """
        for param, value in ((PARAM_RATE, rate), (PARAM_PITCH, pitch), (PARAM_RANGE, pitch_range)):
            if value is not None:
                self._set_parameter(param, value)

    def synthesize(self, text: str, seed: int = 0, reset: bool = True) -> Synthesis:
        """Speak ``text`` with the current voice and parameters.

        Args:
            text: UTF-8 text.
            seed: seeds espeak's random generator (breathiness noise of some variants).
            reset: reload the library first, so the output depends on nothing but the text,
                voice, parameters and seed.

        Returns:
            int16 samples at :attr:`sample_rate` and the phoneme events, in order.
        """
        with self._lock:
            return self._synthesize(text, seed, reset)

    def _synthesize(self, text: str, seed: int, reset: bool) -> Synthesis:
        if reset:
            self.reset()
        lib = self._require()
        lib.espeak_ng_SetRandSeed(int(seed))
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data, len(data))
        self._chunks, self._events = [], []
        try:
            status = lib.espeak_Synth(buf, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
            chunks, events = self._chunks, self._events
        finally:
            self._chunks, self._events = [], []
        if status != EE_OK:
            raise EspeakError(f"espeak_Synth failed with status {status}")
        samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return Synthesis(samples.astype(np.int16, copy=False), self.sample_rate, events)


def _declare(lib: ctypes.CDLL) -> None:
    """Argument and return types, so ctypes passes pointers and sizes at full width."""
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Terminate.argtypes = []
    lib.espeak_Terminate.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint),
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None


_ENGINE: Espeak | None = None
_ENGINE_LOCK = threading.Lock()


def get_engine() -> Espeak:
    """The process's espeak engine, loaded on first use.

    A forked child inherits the parent's engine and may keep using it: the reload in
    :meth:`Espeak.synthesize` then gives the child a private, fresh copy of the library.
    """
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = Espeak()
        return _ENGINE


def synthesize(
    text: str,
    voice: str,
    rate: int | None = None,
    pitch: int | None = None,
    pitch_range: int | None = None,
    seed: int = 0,
) -> Synthesis:
    """Speak ``text`` with a voice (e.g. ``"de+f2"``) and parameters on the process engine.

    Deterministic: the same arguments give the same samples and events, whatever was
    synthesised before (at the price of a library reload per call, see :class:`Espeak`).
    """
    engine = get_engine()
    params = {PARAM_RATE: rate, PARAM_PITCH: pitch, PARAM_RANGE: pitch_range}
    with engine._lock:
        # Recorded rather than applied: the reload in _synthesize applies them to fresh state.
        engine._voice = voice
        engine._params = {k: int(v) for k, v in params.items() if v is not None}
        return engine._synthesize(text, seed, reset=True)
