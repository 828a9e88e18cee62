"""Recording consent rules (mediasrv/recording/consent.py)."""

from __future__ import annotations

import pytest

from mediasrv.recording.consent import ConsentError, RecordingConsent


def test_refused_until_everyone_consented_and_names_who_has_not() -> None:
    c = RecordingConsent(recording_allowed=True)
    assert c.request("dr-lee", "clinician", ["dr-lee", "pat", "interp"]) == ["interp", "pat"]
    c.answer("pat", True)
    with pytest.raises(ConsentError) as e:
        c.check_start()
    assert e.value.code == "consent_missing" and "not answered: interp" in e.value.message
    c.answer("interp", False)
    with pytest.raises(ConsentError, match="refused: interp"):
        c.check_start()
    c.answer("interp", True)
    c.check_start()
    assert c.state is not None and c.state.recording


def test_only_clinicians_in_rooms_that_allow_it() -> None:
    with pytest.raises(ConsentError) as e:
        RecordingConsent(recording_allowed=False).request("dr", "clinician", ["dr"])
    assert e.value.code == "recording_not_allowed"
    with pytest.raises(ConsentError) as e:
        RecordingConsent(recording_allowed=True).request("pat", "patient", ["pat"])
    assert e.value.status == 403


def test_late_joiner_is_asked_and_excluded_until_consent() -> None:
    c = RecordingConsent(recording_allowed=True)
    c.request("dr", "clinician", ["dr"])
    c.check_start()
    assert c.joined("family")
    assert c.state is not None and not c.state.may_record("family")
    c.answer("family", True)
    assert c.state.may_record("family")
    with pytest.raises(ConsentError):
        c.answer("stranger", True)


def test_an_answer_lasts_while_the_participant_stays() -> None:
    """Leaving forgets the answer, during the request and during the recording: whoever comes back
    under that identity is asked again and not recorded until they answer again."""
    c = RecordingConsent(recording_allowed=True)
    c.request("dr", "clinician", ["dr", "pat"])
    c.answer("pat", True)
    c.check_start()
    c.left("pat")
    assert c.joined("pat"), "asked again on rejoin"
    assert c.state is not None and not c.state.may_record("pat") and c.state.pending() == ["pat"]
    c.answer("pat", False)
    c.left("pat")
    assert c.joined("pat"), "a refusal is not kept either: they are asked again"
    c.answer("pat", True)
    assert c.state.may_record("pat")


def test_a_request_waits_only_for_those_present() -> None:
    """The last participant who had not answered leaves: everyone left has granted, the recording may
    start. A departure while others have not answered does not; a request nobody is left for ends."""
    c = RecordingConsent(recording_allowed=True)
    c.request("dr", "clinician", ["dr", "pat", "interp", "family"])
    c.answer("pat", True)
    assert not c.left("family"), "interp has not answered"
    assert c.left("interp")
    c.check_start()
    assert c.state is not None and c.state.recording
    assert not c.left("pat"), "a running recording goes on"

    c.stop()
    c.request("dr", "clinician", ["dr", "pat"])
    assert not c.left("dr") and c.state is not None and c.state.pending() == ["pat"]
    assert not c.left("pat") and c.state is None, "nobody left to record: the request ends"
