-- A mediasrv SQLite database as versions before schema_migrations left it (made at commit 7744df8
-- by its stores, storage key bytes(range(32))): tests/control/test_database.py opens it with today's code.
BEGIN TRANSACTION;
CREATE TABLE attachments (
            id TEXT PRIMARY KEY,
            message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
            upload_id TEXT NOT NULL UNIQUE,
            blob_id TEXT NOT NULL,
            state TEXT NOT NULL,
            reason TEXT,
            content_type TEXT NOT NULL,
            length INTEGER NOT NULL,
            sealed_name BLOB,
            sha256 TEXT,
            media TEXT,
            thumbnail_blob TEXT,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            completed_at REAL
        );
INSERT INTO "attachments" VALUES('1DBs5P2ShswJ0c8c','zf4nV6dPZljSr7dLBrlaeQ','VLBZgfpBbpnE4I2ekD9YA5lEUWw2q0K1','bbbbbbbbbbbbbbbbbbbbbb','uploading',NULL,'image/png',10,X'0268DB67243CE21F6B138BE3B78C2D824324588885C2C3E88DCB75F0E578B0EF8378',NULL,NULL,NULL,1.796513805801520586e+09,1.79651740580150628091e+09,NULL);
CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            actor TEXT NOT NULL,
            role TEXT NOT NULL,
            action TEXT NOT NULL,
            room TEXT,
            visit TEXT,
            target TEXT,
            address TEXT,
            detail TEXT
        );
INSERT INTO "audit_log" VALUES(1,1.79651380580252647395e+09,'dr-a','clinician','room.created','r1','v1',NULL,NULL,NULL);
CREATE TABLE closed_rooms (
            name TEXT PRIMARY KEY,
            closed_at REAL NOT NULL
        );
CREATE TABLE configured_rooms (
            name TEXT PRIMARY KEY,
            visit_id TEXT NOT NULL,
            options TEXT NOT NULL,
            created_at REAL NOT NULL
        );
INSERT INTO "configured_rooms" VALUES('r1','v1','{"waiting_room": false, "max_participants": null, "max_duration_s": null, "recording_allowed": false}',1.79651380580532789234e+09);
CREATE TABLE messages (
            id TEXT PRIMARY KEY,
            sender TEXT NOT NULL,
            sender_role TEXT NOT NULL,
            recipient TEXT NOT NULL,
            created_at REAL NOT NULL,
            read_at REAL,
            sealed BLOB NOT NULL
        );
INSERT INTO "messages" VALUES('zf4nV6dPZljSr7dLBrlaeQ','dr-a','clinician','pt-b',1.79651380580126857761e+09,NULL,X'027127AA0330C3AFDF58C8C42E70C8CEC87A847BDF3B9CFE994D406071CE0588CBDDD84B4AC97025C8A324B93641751BCF18C0A8856784E2162F');
CREATE TABLE recording_files (blob_id TEXT PRIMARY KEY, recording_id TEXT NOT NULL REFERENCES recordings (id) ON DELETE CASCADE, participant TEXT NOT NULL, kind TEXT NOT NULL, codec TEXT NOT NULL, content_type TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL, frames INTEGER NOT NULL, start_s REAL, end_s REAL);
CREATE TABLE recording_files_pending (blob_id TEXT PRIMARY KEY, recording_id TEXT NOT NULL REFERENCES recordings (id) ON DELETE CASCADE, participant TEXT NOT NULL, kind TEXT NOT NULL, codec TEXT NOT NULL, content_type TEXT NOT NULL, frames INTEGER NOT NULL, start_s REAL, end_s REAL);
CREATE TABLE recording_participants (
            recording_id TEXT NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
            identity TEXT NOT NULL,
            PRIMARY KEY (recording_id, identity)
        );
INSERT INTO "recording_participants" VALUES('m4sqQtj6g7zgQbu_','pt-b');
CREATE TABLE recordings (
            id TEXT PRIMARY KEY,
            room TEXT NOT NULL,
            visit TEXT,
            started_by TEXT NOT NULL,
            started_at REAL NOT NULL,
            stopped_at REAL,
            state TEXT NOT NULL
        );
INSERT INTO "recordings" VALUES('m4sqQtj6g7zgQbu_','r1','v1','dr-a',1796513805.80412,1.7965138058051013947e+09,'ready');
CREATE TABLE room_visits (
            visit_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            started_at REAL NOT NULL,
            ended_at REAL,
            -- ended by a close that refuses the tokens issued before it (an admin's, or max_duration)
            revoking INTEGER NOT NULL DEFAULT 0
        );
INSERT INTO "room_visits" VALUES('v1','r1',1.79651380580532789234e+09,NULL,0);
CREATE TABLE vitals_readings (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            room TEXT,
            visit TEXT,
            patient TEXT NOT NULL,
            kind TEXT NOT NULL,
            received_at REAL NOT NULL,
            device_time_ms INTEGER,
            sealed BLOB NOT NULL
        );
INSERT INTO "vitals_readings" VALUES(1,'r1','v1','pt-b','spo2',1.79651380580326843266e+09,1700000000000,X'02AE528A38A95229F61340C3BAFB8072E4CB6326B965D149C0DFE78E9FC715204DD007D0DEE98EF031');
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
           BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
           BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE INDEX audit_log_ts ON audit_log (ts);
CREATE INDEX messages_recipient ON messages (recipient, created_at);
CREATE INDEX messages_sender ON messages (sender, created_at);
CREATE INDEX messages_created ON messages (created_at);
CREATE INDEX attachments_message ON attachments (message_id);
CREATE INDEX attachments_state ON attachments (state, expires_at);
CREATE INDEX vitals_room ON vitals_readings (room, received_at);
CREATE INDEX vitals_patient ON vitals_readings (patient, received_at);
CREATE INDEX vitals_room_id ON vitals_readings (room, id);
CREATE INDEX recording_files_rec ON recording_files (recording_id);
CREATE INDEX room_visits_name ON room_visits (name, started_at);
CREATE INDEX audit_log_visit ON audit_log (visit);
CREATE INDEX vitals_room_visit_id ON vitals_readings (room, visit, id);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('audit_log',1);
INSERT INTO "sqlite_sequence" VALUES('vitals_readings',1);
COMMIT;
