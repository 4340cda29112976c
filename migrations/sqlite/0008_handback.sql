-- Pool `handback`: a row that hands a chat back from an agent who is away
-- or off shift carries the reason, so the worker decides it although the
-- chat has an assignee. NULL on producers' rows.
ALTER TABLE queue ADD COLUMN handback TEXT;

-- Who answered which chat, and when (`message.chat.agent`): "unanswered"
-- hands back only the chats their assignee has not answered.
CREATE TABLE chat_answers (
    chat_id INTEGER NOT NULL,
    agent   TEXT    NOT NULL,
    at      INTEGER NOT NULL,
    PRIMARY KEY (chat_id, agent)
);

-- When the customer last wrote in a chat (`message.chat.customer`).
CREATE TABLE chat_customer_messages (
    chat_id INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL
);

-- Chats handed back from an agent, so that each goes back once per
-- absence (unless the customer writes again); forgotten when the agent is
-- present again or the chat is no longer theirs.
CREATE TABLE handbacks (
    chat_id INTEGER PRIMARY KEY,
    agent   TEXT    NOT NULL,
    at      INTEGER NOT NULL
);
